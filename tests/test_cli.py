"""The CLI end to end on a tiny synthetic set, in a subprocess as a user runs it."""
import json
import signal
import subprocess
import sys
import time

import yaml
from safetensors.torch import load_file

TINY = ["--set", "data.synthetic.rows=3000", "--set", "data.synthetic.max_cardinality=200",
        "--set", "model.embedding_dim=8", "--set", "model.layers=1", "--set", "model.rank=2",
        "--set", "model.interaction_tokens=2", "--set", "model.implicit_tokens=2", "--set", "model.hidden=16",
        "--set", "train.epochs=2", "--set", "train.batch_size=256", "--quiet"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "dlf", *args], capture_output=True, text=True, timeout=300)


def test_train_end_to_end_writes_a_run_directory(tmp_path):
    out = tmp_path / "run"
    proc = run("train", "--dataset", "synthetic", "--model", "dlf", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "oracle" in proc.stdout and "AUC" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.5 < metrics["test"]["auc"] <= 1 and metrics["test"]["logloss"] > 0
    assert metrics["oracle_test"]["auc"] > 0.5 and len(metrics["history"]) == 2
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["name"] == "dlf" and cfg["model"]["layers"] == 1 and cfg["train"]["epochs"] == 2
    weights = load_file(out / "model.safetensors")
    assert any(k.startswith("layers.0.fusion") for k in weights)
    assert json.loads((out / "feature_map.json").read_text())["fields"][0]["name"] == "c1"
    assert f"{metrics['test']['auc']:.4f}" in proc.stdout


def test_bad_input_gives_one_line_error_and_nonzero_exit():
    for args, needle in [(["--model", "nosuch"], "unknown model 'nosuch'"),
                         (["--set", "model.layers=abc"], "model.layers: expected an integer"),
                         (["--set", "model.what=1"], "unknown key 'model.what'"),
                         (["--dataset", "mnist"], "unknown dataset 'mnist'"),
                         # checked before torchrun starts the processes (each printed it, then torchrun's traceback)
                         (["--set", "train.batch_size=255", "--nproc", "2"],
                          "train.batch_size=255 must be divisible by --nproc 2"),
                         (["--set", "train.lr=nan", "--nproc", "2"], "train.lr: expected a finite number"),
                         (["--resume", "no/such/run", "--nproc", "2"],
                          "cannot resume: no/such/run/config.yaml does not exist"),
                         (["--data", "data/x", "--dataset", "synthetic"], "--dataset synthetic conflicts with it"),
                         # only known once the generator has drawn which fields may interact (was a traceback)
                         (["--set", "data.synthetic.categorical=3", "--set", "data.synthetic.numeric=0",
                           "--set", "data.synthetic.multi_valued=false", "--set", "data.synthetic.rows=500"],
                          "12 distinct groups of 2 asked for, but only")]:
        proc = run("train", *args)
        assert proc.returncode == 2
        assert needle in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_models_lists_the_registry():
    proc = run("models")
    assert proc.returncode == 0 and "dlf_concat" in proc.stdout and "lr" in proc.stdout


def test_serve_port_out_of_range_is_a_usage_error(tmp_path):
    # checked before the bundle is read (with a real bundle, bind() failed with a 143-line traceback)
    proc = run("serve", str(tmp_path), "--port", "99999")
    assert proc.returncode == 2 and "--port" in proc.stderr and "65535" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_cannot_change_the_model(tmp_path):
    from dlf.config import load_config
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(load_config().to_dict()))
    proc = run("train", "--resume", str(tmp_path), "--set", "model.name=fm")  # said "unknown key 'model.<dlf key>'"
    assert proc.returncode == 2 and "--resume cannot change the model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_out_that_is_a_file_or_below_one_is_a_one_line_error(tmp_path):
    """Was a FileExistsError / NotADirectoryError traceback, raised after the data had been loaded."""
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    for out, says in ((afile, "is a file, not a directory"), (afile / "run", "cannot write the run directory")):
        proc = run("train", "--out", str(out), *TINY)
        assert proc.returncode == 2 and says in proc.stderr and str(out) in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert afile.read_text() == "keep me"


def test_out_with_spaces_in_the_path(tmp_path):
    out = tmp_path / "my runs" / "run 1"
    proc = run("train", "--out", str(out), *TINY, "--set", "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()


def test_undefined_test_auc_prints_n_a_not_nan(tmp_path):
    proc = run("train", "--out", str(tmp_path / "run"), *TINY, "--set", "train.epochs=1",
               "--set", "data.synthetic.click_rate=0.001", "--set", "train.monitor=logloss")  # no click in test
    assert proc.returncode == 0, proc.stderr
    assert "n/a" in proc.stdout and "nan" not in proc.stdout.lower() and "undefined on the test split" in proc.stdout


def test_a_run_directory_that_cannot_hold_checkpoints_is_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("{model: {}, data: {}, train: {}}\n")  # a dlf run's folder (others are refused)
    (out / "checkpoints").write_text("not a folder")  # was a FileExistsError traceback after the first epoch
    proc = run("train", "--out", str(out), *TINY)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: cannot write a checkpoint of step") and len(proc.stderr.splitlines()) == 1


def test_cuda_device_without_cuda_is_a_one_line_error():
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("checks the message on a machine without CUDA")
    for nproc in ("1", "2"):  # 1: was a RuntimeError traceback; 2: each process torchrun started said it
        proc = run("train", *TINY, "--set", "train.device=cuda", "--nproc", nproc)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip() == "error: train.device=cuda but no CUDA device is available; use train.device=cpu"


def test_result_table_shows_gauc_when_the_data_has_groups(capsys):
    """gAUC was computed (metrics.json) but the table printed AUC and logloss only."""
    from dlf.cli import _print_result
    _print_result({"model": "dlf", "dataset": "processed",
                   "test": {"auc": 0.71, "logloss": 0.45, "calibration": 1.0, "gauc": 0.6543}}, None)
    out = capsys.readouterr().out
    assert "gAUC" in out and "0.6543" in out
    _print_result({"model": "dlf", "dataset": "synthetic", "test": {"auc": 0.71, "logloss": 0.45},
                   "oracle_test": {"auc": 0.8, "logloss": 0.4}}, None)
    assert "gAUC" not in capsys.readouterr().out


def default_sigint() -> None:
    """In a child: Ctrl-C's default action, for pytest started in the background (`pytest &`), where the shell made
    SIGINT ignored and every child inherits that: the signal was lost and the run trained to its end (exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_after_first_checkpoint(out, signum, *extra):
    """Start a run that would train for minutes (no early stop: a run that ended before the signal came was exit 0),
    send `signum` once its first checkpoint is written; (process, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "dlf", "train", "--out", str(out), *TINY, "--set", "train.epochs=50",
                             "--set", "data.synthetic.rows=20000", "--set", "train.patience=10000", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while not list(out.glob("checkpoints/step-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return proc, stderr


def test_ctrl_c_says_how_to_continue_the_run(tmp_path):
    """Ctrl-C ended `dlf train` with exit 130 and no output at all. (The path is printed as it is: rich read its
    '[b]' as markup.)"""
    out = tmp_path / "run[b]"
    proc, stderr = _signal_after_first_checkpoint(out, signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip() == f"interrupted: continue with dlf train --resume {out}"


def test_sigterm_stops_the_run_as_ctrl_c_does(tmp_path):
    """SIGTERM (`kill`, `timeout`, a scheduler's pre-emption) ended `dlf train` on the spot with status -15 and no word,
    a checkpoint being written left behind as a hidden temporary file."""
    out = tmp_path / "run"
    proc, stderr = _signal_after_first_checkpoint(out, signal.SIGTERM, "--set", "train.checkpoint_every_steps=1")
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr
    assert stderr.strip() == f"interrupted: continue with dlf train --resume {out}"
    assert not list(out.rglob(".*"))  # no temporary file left


def test_version_and_command_list():
    """`dlf --version` was 'No such option'; the command list broke a summary where its docstring's lines broke
    (analyze, evaluate: a half line, then the rest on the next row)."""
    from typer.testing import CliRunner

    import dlf
    from dlf.cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output == f"dlf {dlf.__version__}\n", res.output
    res = CliRunner().invoke(app, [], env={"COLUMNS": "200"})  # (no arguments: the help)
    assert "dlf: CTR prediction with DLF and baselines." in res.output and "--version" in res.output, res.output
    rows = res.output.split("Commands")[1].splitlines()[1:-1]
    assert len(rows) == len(app.registered_commands) and all(row.rstrip(" │").endswith(".") for row in rows), rows
