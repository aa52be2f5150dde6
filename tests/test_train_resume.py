"""Kill a training subprocess with SIGKILL mid-epoch, resume it, and get bit-identical weights."""
import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file

import dlf as dlf_api

TINY = ["--set", "data.synthetic.rows=3000", "--set", "data.synthetic.max_cardinality=200",
        "--set", "model.embedding_dim=8", "--set", "model.layers=1", "--set", "model.rank=2",
        "--set", "model.interaction_tokens=2", "--set", "model.implicit_tokens=2", "--set", "model.hidden=16",
        "--set", "model.dropout=0.2",  # dropout draws from the torch RNG: its state must be restored too
        "--set", "train.epochs=3", "--set", "train.batch_size=256", "--set", "train.threads=1",
        "--set", "train.checkpoint_every_steps=3", "--set", "train.eval_every_steps=7", "--quiet"]
STEPS_PER_EPOCH = 10  # 2400 train rows / 256


def dlf(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dlf", *args], capture_output=True, text=True, timeout=300, **kw)


def _steps(run):
    return sorted(int(p.name[5:14]) for p in (run / "checkpoints").glob("step-*.safetensors"))


def _descendants(pid):
    """Ids of the processes below `pid` (from /proc): `dlf train --nproc N` starts torchrun, which starts
    its N workers in sessions of their own, so killing a process group would not reach them."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_after_mid_epoch_checkpoint(run, args=TINY):
    """Run `dlf train --out RUN ARGS` and SIGKILL it and every process it started (a pre-empted machine) as
    soon as a mid-epoch checkpoint exists; returns the exit code of `dlf train`."""
    proc = subprocess.Popen([sys.executable, "-m", "dlf", "train", "--out", str(run), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "checkpoints").is_dir() and any(s % STEPS_PER_EPOCH for s in _steps(run)):
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full") / "run"
    proc = dlf("train", "--out", str(run), *TINY)
    assert proc.returncode == 0, proc.stderr
    return run


def _assert_same_weights(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_sigkill_mid_epoch_then_resume_gives_bit_identical_weights(tmp_path, uninterrupted):
    run = tmp_path / "run"
    rc = _kill_after_mid_epoch_checkpoint(run)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "model.safetensors").exists()
    killed_at = max(_steps(run))
    proc = dlf("train", "--resume", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming from step-{killed_at:09d}" in proc.stdout
    _assert_same_weights(run, uninterrupted)
    # the CSV log is the whole history once, not the killed run's rows plus the resumed run's
    _assert_same_log(run, uninterrupted)


def _assert_same_log(a, b, skip=("samples_per_s",)):
    ra = list(csv.DictReader((a / "train_log.csv").open()))
    rb = list(csv.DictReader((b / "train_log.csv").open()))
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k not in skip} == {k: v for k, v in y.items() if k not in skip}


def test_sparse_embedding_run_killed_mid_epoch_resumes_to_bit_identical_weights(tmp_path):
    # both optimisers (Adam for the network, SparseAdam for the table) and the batch-rows L2 survive the restart
    args = [*TINY, "--set", "train.sparse_embedding=true", "--set", "train.embedding_l2=1e-3"]
    full = tmp_path / "full"  # uninterrupted, in this process (same seed and thread count as the subprocesses)
    dlf_api.train(dlf_api.load_config(None, [a for a in args if "=" in a] + ["train.progress=false"]), out=full,
                  console=Console(quiet=True))
    run = tmp_path / "run"
    assert _kill_after_mid_epoch_checkpoint(run, args) == -signal.SIGKILL, "the run finished before it could be killed"
    proc = dlf("train", "--resume", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "resuming from step-" in proc.stdout
    _assert_same_weights(run, full)


def test_corrupted_latest_checkpoint_on_resume_warns_and_uses_the_previous(tmp_path, uninterrupted):
    run = tmp_path / "run"
    assert _kill_after_mid_epoch_checkpoint(run) == -signal.SIGKILL
    # a truncated copy posing as the newest checkpoint (as a crash during a non-atomic copy would leave)
    steps = _steps(run)
    newest = run / "checkpoints" / f"step-{max(steps):09d}.safetensors"
    damaged = run / "checkpoints" / f"step-{max(steps) + 1:09d}.safetensors"
    damaged.write_bytes(newest.read_bytes()[:-1000])
    proc = dlf("train", "--resume", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "truncated or corrupted" in proc.stdout and "previous checkpoint" in proc.stdout
    _assert_same_weights(run, uninterrupted)


def test_resume_of_a_non_run_is_a_one_line_error(tmp_path):
    proc = dlf("train", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "config.yaml" in proc.stderr and "Traceback" not in proc.stderr


def _api_config(*overrides, path=None):
    return dlf_api.load_config(path, [a for a in TINY if "=" in a and "epochs" not in a] + ["train.progress=false",
                                                                                           *overrides])


def test_finished_run_resumed_with_more_epochs_trains_on(tmp_path):
    quiet = Console(quiet=True)
    full = tmp_path / "full"  # uninterrupted 2 epochs
    dlf_api.train(_api_config("train.epochs=2"), out=full, console=quiet)
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=quiet)
    console = Console(record=True, width=400)
    metrics = dlf_api.train(_api_config("train.epochs=2", path=run / "config.yaml"), resume=run, console=console)
    text = console.export_text()
    assert "already finished" not in text and "config differs" not in text
    assert metrics["epochs_run"] == 2
    assert [int(r["epoch"]) for r in csv.DictReader((run / "train_log.csv").open())] == [1, 1, 2, 2]
    _assert_same_weights(run, full)
    _assert_same_log(run, full)


class _InterruptAt(Console):
    """A console that raises KeyboardInterrupt (Ctrl-C) when it is asked to print a line holding `text`."""

    def __init__(self, text):
        super().__init__(quiet=True)
        self.text = text

    def print(self, *objects, **kwargs):
        if any(self.text in str(o) for o in objects):
            raise KeyboardInterrupt


def test_a_plain_resume_keeps_the_epochs_an_interrupted_resume_was_given(tmp_path, uninterrupted):
    """`--resume RUN --set train.epochs=3` killed in epoch 2, then `--resume RUN`: config.yaml still said 1 epoch, so
    the second resume trained nothing, said only 'resuming from ...: epoch 2, step 12' and wrote metrics.json of a run
    stopped mid-epoch. The settings of a resume that passed its checks are now the run's config.yaml."""
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    with pytest.raises(KeyboardInterrupt):
        dlf_api.train(_api_config("train.epochs=3", path=run / "config.yaml"), resume=run,
                      console=_InterruptAt("epoch  2 step 14"))
    assert _steps(run)[-1] == 12
    metrics = dlf_api.train(resume=run, console=Console(quiet=True))
    assert metrics["epochs_run"] == 3
    _assert_same_weights(run, uninterrupted)


def test_a_resume_past_its_last_epoch_says_that_nothing_is_trained(tmp_path):
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    with pytest.raises(KeyboardInterrupt):
        dlf_api.train(_api_config("train.epochs=3", path=run / "config.yaml"), resume=run,
                      console=_InterruptAt("epoch  2 step 14"))
    console = Console(record=True, width=400)
    dlf_api.train(_api_config("train.epochs=1", path=run / "config.yaml"), resume=run, console=console)
    assert ("epoch 2, step 2/10 (global step 12); train.epochs=1 ends before this epoch, so nothing is trained "
            "(raise train.epochs to finish it)") in console.export_text()


def test_early_stopped_run_stays_finished_when_epochs_are_raised(tmp_path):
    from dlf.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    # the same checkpoint, marked as the end of an early-stopped run
    ck = load_checkpoint(list_checkpoints(run / "checkpoints")[0])
    ck.state.stopped_early = True
    save_checkpoint(run / "checkpoints", model_state=ck.model, optimizer_state=ck.optimizer, state=ck.state,
                    config=ck.config, best_state=ck.best)
    console = Console(record=True, width=400)
    metrics = dlf_api.train(_api_config("train.epochs=2", path=run / "config.yaml"), resume=run, console=console)
    assert "stopped early" in console.export_text() and metrics["epochs_run"] == 1


def test_run_of_a_relative_data_path_resumes_from_another_directory(tmp_path, monkeypatch):
    from dlf.data.preprocess import preprocess
    fixture = Path(__file__).parent / "fixtures" / "data" / "criteo_tiny.txt"
    preprocess("criteo", [fixture], tmp_path / "data", options={"min_count": 1, "ratios": "0.5,0.25,0.25"})
    monkeypatch.chdir(tmp_path)
    cfg = dlf_api.load_config(None, ["data.path=data", "model.embedding_dim=4", "model.layers=1", "model.rank=2",
                                     "model.interaction_tokens=2", "model.implicit_tokens=2", "model.hidden=8",
                                     "train.epochs=1", "train.batch_size=4", "train.progress=false"])
    dlf_api.train(cfg, out="run", console=Console(quiet=True))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["path"]
    # was "data": relative to the directory the run was started from
    assert Path(saved).is_absolute() and Path(saved).resolve() == (tmp_path / "data").resolve()
    monkeypatch.chdir(tmp_path / "run")
    metrics = dlf_api.train(resume=tmp_path / "run", console=Console(quiet=True))
    assert metrics["epochs_run"] == 1


def test_resume_with_another_process_count_warns(tmp_path):
    """The process count is in no config, so resuming a 2-process run with 1 process passed silently although the
    result then cannot match (other dropout streams, other shards)."""
    from dlf.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    ck = load_checkpoint(list_checkpoints(run / "checkpoints")[0])
    save_checkpoint(run / "checkpoints", model_state=ck.model, optimizer_state=ck.optimizer, state=ck.state,
                    config=ck.config, best_state=ck.best, rank_rng=[ck.rng["torch"]] * 2)  # as 2 processes write it
    for epochs, warned in ((2, True), (3, False)):  # then the checkpoint this 1-process resume wrote: no warning
        console = Console(record=True, width=400)
        dlf_api.train(_api_config(f"train.epochs={epochs}", path=run / "config.yaml"), resume=run, console=console)
        assert ("written by 2 process(es) and is resumed with 1" in console.export_text()) is warned


def test_ranks_a_checkpoint_has_no_rng_for_get_streams_of_their_own(tmp_path):
    """A 1-process checkpoint resumed with 2 processes gave rank 1 rank 0's torch state: both ranks then drew the
    same dropout masks."""
    from dlf.train.checkpoint import list_checkpoints, load_checkpoint
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    ck = load_checkpoint(list_checkpoints(run / "checkpoints")[0])
    states = [ck.rng_for_rank(rank, seed=5)["torch"] for rank in (0, 1, 2)]
    assert torch.equal(states[0], ck.rng["torch"])
    assert not torch.equal(states[1], states[0]) and not torch.equal(states[2], states[1])
    assert torch.equal(ck.rng_for_rank(1, seed=5)["torch"], states[1])  # reproducible
    assert not torch.equal(ck.rng_for_rank(1, seed=6)["torch"], states[1])


def test_a_checkpoint_without_per_rank_cuda_states_resumes_ranks_above_0_on_cuda_streams_of_their_own(tmp_path):
    """Checkpoints of 2 CUDA processes hold rank 0's generator of every device (`rng/cuda/<i>`, written by older dlf
    versions alone): rank r restored rank 0's generator of device r, which no rank drew from, so ranks 1.. resumed
    with equal CUDA dropout streams. Now rank 0 takes its own device's state, the others seeded streams of their own,
    as for the torch state; a run on CPU neither gets nor restores a CUDA state (no torch.cuda call)."""
    from unittest import mock

    from dlf.train.checkpoint import TrainState, load_checkpoint, restore_rng, save_checkpoint
    from dlf.train.distributed import rank_seed
    views = [torch.full((16,), i + 1, dtype=torch.uint8) for i in range(3)]  # rank 0's generators of 3 devices
    with mock.patch("torch.cuda.is_available", lambda: True), mock.patch("torch.cuda.is_initialized", lambda: True), \
            mock.patch("torch.cuda.get_rng_state_all", lambda: views):
        path = save_checkpoint(tmp_path, model_state={"w": torch.zeros(1)},
                               optimizer_state={"state": {}, "param_groups": []}, state=TrainState(global_step=7),
                               config={}, rank_rng=[torch.get_rng_state()] * 3)
    ck = load_checkpoint(path)
    rngs = [ck.rng_for_rank(rank, seed=5, device=torch.device("cuda", rank)) for rank in range(3)]
    assert torch.equal(rngs[0]["cuda"], views[0]) and "cuda_seed" not in rngs[0]
    assert [r.get("cuda_seed") for r in rngs[1:]] == [rank_seed(5, 1) + 7, rank_seed(5, 2) + 7]
    assert all("cuda" not in r for r in rngs[1:])
    cpu = ck.rng_for_rank(0, seed=5, device=torch.device("cpu"))
    assert "cuda" not in cpu and "cuda_seed" not in cpu
    with mock.patch("torch.cuda.is_available", lambda: True), \
            mock.patch("torch.cuda.set_rng_state_all", side_effect=AssertionError("CUDA touched")), \
            mock.patch("torch.cuda.set_rng_state", side_effect=AssertionError("CUDA touched")):
        restore_rng(cpu, torch.device("cpu"))


def test_an_lr_changed_on_resume_is_used_not_silently_replaced_by_the_checkpoints(tmp_path):
    """The optimiser's load_state_dict restored the saved lr: `--resume RUN --set train.lr=...` had no effect."""
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    console = Console(record=True, width=400)
    metrics = dlf_api.train(_api_config("train.epochs=2", "train.lr=0.02", "train.weight_decay=0.001",
                                        path=run / "config.yaml"), resume=run, console=console)
    assert next(r["lr"] for r in metrics["history"] if r["epoch"] == 2) == 0.02  # (was 0.001)
    assert "train.lr 0.001 -> 0.02" in console.export_text()
    from dlf.train.checkpoint import list_checkpoints, load_checkpoint
    assert load_checkpoint(list_checkpoints(run / "checkpoints")[0]).optimizer["param_groups"][0]["weight_decay"] \
        == 0.001


def test_a_monitor_changed_on_resume_restarts_the_comparison(tmp_path):
    """The plateau's best value was kept from the other monitor (auc-logloss ~ -0.1 against -logloss ~ -0.6): no
    evaluation could improve on it, so the resumed run decayed the lr and stopped early at its first evaluation."""
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1", "train.eval_every_steps=0"), out=run, console=Console(quiet=True))
    console = Console(record=True, width=400)
    metrics = dlf_api.train(_api_config("train.epochs=2", "train.eval_every_steps=0", "train.monitor=logloss",
                                        "train.patience=1", path=run / "config.yaml"), resume=run, console=console)
    assert metrics["history"][-1]["best"] is True and metrics["best_epoch"] == 2 and metrics["epochs_run"] == 2
    assert "train.monitor auc-logloss -> logloss" in console.export_text()


def test_resume_with_data_naming_the_same_folder_relatively_does_not_warn(tmp_path, monkeypatch):
    """config.yaml stores data.path absolute; `--resume RUN --data data` compared 'data' with it and warned that
    the config differs (the result will not match) although nothing had changed."""
    from dlf.data.preprocess import preprocess
    fixture = Path(__file__).parent / "fixtures" / "data" / "criteo_tiny.txt"
    preprocess("criteo", [fixture], tmp_path / "data", options={"min_count": 1, "ratios": "0.5,0.25,0.25"})
    monkeypatch.chdir(tmp_path)
    sets = ["model.embedding_dim=4", "model.layers=1", "model.rank=2", "model.interaction_tokens=2",
            "model.implicit_tokens=2", "model.hidden=8", "train.batch_size=4", "train.progress=false"]
    dlf_api.train(dlf_api.load_config(None, ["data.path=data", "train.epochs=1", *sets]), out="run",
                  console=Console(quiet=True))
    console = Console(record=True, width=400)
    dlf_api.train(dlf_api.load_config("run/config.yaml", ["data.path=data", "train.epochs=2"]), resume="run",
                  console=console)
    text = console.export_text()
    assert "resuming from" in text and "config differs" not in text


def test_the_config_differs_warning_names_what_changed(tmp_path):
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    console = Console(record=True, width=400)
    dlf_api.train(_api_config("train.epochs=2", "train.threads=2", "train.precision=bf16", path=run / "config.yaml"),
                  resume=run, console=console)
    text = console.export_text()
    assert "config differs" in text and "train.threads: 1 -> 2, train.precision: fp32 -> bf16" in text


def test_resuming_with_settings_that_compute_the_same_does_not_warn(tmp_path):
    """model.checkpoint_layers (recomputes the same values) and train.checkpoint_every_steps changed on resume were
    named in 'the config differs ... the result will not match', and the resumed run matched to the bit."""
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    console = Console(record=True, width=400)
    dlf_api.train(_api_config("train.epochs=2", "model.checkpoint_layers=true", "train.checkpoint_every_steps=3",
                              path=run / "config.yaml"), resume=run, console=console)
    text = console.export_text()
    assert "resuming from" in text and "config differs" not in text


def test_data_path_with_a_tilde_in_a_yaml_config_is_the_home_folder(tmp_path, monkeypatch):
    """data.path: ~/data in a YAML file (no shell expands it) was read as ./~/data: 'not found'."""
    from dlf.data.preprocess import preprocess
    fixture = Path(__file__).parent / "fixtures" / "data" / "criteo_tiny.txt"
    preprocess("criteo", [fixture], tmp_path / "data", options={"min_count": 1, "ratios": "0.5,0.25,0.25"})
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "data")
    cfg = dlf_api.load_config(None, ["data.path=~/data", "model.embedding_dim=4", "model.layers=1", "model.rank=2",
                                     "model.interaction_tokens=2", "model.implicit_tokens=2", "model.hidden=8",
                                     "train.epochs=1", "train.batch_size=4", "train.progress=false"])
    dlf_api.train(cfg, out=tmp_path / "run", console=Console(quiet=True))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["path"]
    assert Path(saved) == (tmp_path / "data").absolute()


@pytest.mark.parametrize("override, refusal", [
    ("train.batch_size=128", "was trained with train.batch_size=256, resumed with 128"),
    ("train.sparse_embedding=true", "was written with train.sparse_embedding=false; resume with the same setting"),
    # refused only once the model is built and the checkpoint's weights and optimiser state are loaded into it
    ("model.hidden=32", "its weights do not fit this DLF model"),
    ("train.optimizer=adagrad", "was written with another train.optimizer")])
def test_a_refused_resume_is_its_error_alone_without_the_config_differs_warning(tmp_path, override, refusal):
    """The warning that the config differs (the result will not match) came first, for a resume then refused."""
    from dlf.train.trainer import TrainingError
    run = tmp_path / "run"
    dlf_api.train(_api_config("train.epochs=1"), out=run, console=Console(quiet=True))
    console = Console(record=True, width=400)
    saved = (run / "config.yaml").read_text()
    with pytest.raises(TrainingError, match=refusal):
        dlf_api.train(_api_config("train.epochs=2", override, path=run / "config.yaml"), resume=run, console=console)
    assert "config differs" not in console.export_text()
    assert (run / "config.yaml").read_text() == saved  # a refused resume's settings do not become the run's


def _processed_run(tmp_path, seed=1):
    """A 1-epoch run of a tiny DLF on the criteo fixture, preprocessed into tmp_path/data-SEED (split seed SEED)."""
    from dlf.data.preprocess import preprocess
    fixture = Path(__file__).parent / "fixtures" / "data" / "criteo_tiny.txt"
    data = tmp_path / f"data-{seed}"
    preprocess("criteo", [fixture], data, options={"min_count": 1, "ratios": "0.5,0.25,0.25", "seed": seed})
    sets = ["model.embedding_dim=4", "model.layers=1", "model.rank=2", "model.interaction_tokens=2",
            "model.implicit_tokens=2", "model.hidden=8", "train.batch_size=4", "train.progress=false"]
    run = tmp_path / "run"
    dlf_api.train(dlf_api.load_config(None, [f"data.path={data}", "train.epochs=1", *sets]), out=run,
                  console=Console(quiet=True))
    return run


def test_a_resume_refused_for_other_processed_data_has_no_config_differs_warning(tmp_path):
    """`--resume RUN --data OTHER` warned that data.path differs (the result will not match), then, once the data
    was loaded, refused the resume for being trained on other data."""
    from dlf.data.preprocess import preprocess
    from dlf.train.trainer import TrainingError
    run = _processed_run(tmp_path)
    fixture = Path(__file__).parent / "fixtures" / "data" / "criteo_tiny.txt"
    preprocess("criteo", [fixture], tmp_path / "other", options={"min_count": 1, "ratios": "0.5,0.25,0.25",
                                                                 "seed": 2})
    console = Console(record=True, width=400)
    with pytest.raises(TrainingError, match="was trained on other data than this"):
        dlf_api.train(dlf_api.load_config(run / "config.yaml", [f"data.path={tmp_path / 'other'}"]), resume=run,
                      console=console)
    assert "config differs" not in console.export_text()


def test_a_refused_resume_of_a_checkpoint_without_the_data_identity_has_no_data_warning(tmp_path):
    """The warning that an old checkpoint cannot tell which processed data it was trained on came first, for a
    resume then refused (its weights do not fit the changed model)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save as st_save

    from dlf.train.checkpoint import list_checkpoints
    from dlf.train.trainer import TrainingError
    run = _processed_run(tmp_path)
    path = list_checkpoints(run / "checkpoints")[0]
    with safe_open(str(path), "pt") as f:
        doc = json.loads(f.metadata()["dlf_checkpoint"])
    del doc["data"]  # as checkpoints were written before they stored it
    path.write_bytes(st_save(load_file(path), metadata={"dlf_checkpoint": json.dumps(doc)}))
    console = Console(record=True, width=400)
    with pytest.raises(TrainingError, match="its weights do not fit"):
        dlf_api.train(dlf_api.load_config(run / "config.yaml", ["model.hidden=16"]), resume=run, console=console)
    assert "predates data checks" not in console.export_text() and "config differs" not in console.export_text()
    dlf_api.train(None, resume=run, console=console)  # accepted: the warning is still there
    assert "predates data checks" in console.export_text()


def test_the_config_differs_warning_quotes_a_path_verbatim(tmp_path):
    """The warning went through rich markup: resuming with --data naming a copy of the data under a path holding
    '[/i]' raised MarkupError (a traceback instead of the run), and a '[b]' in it was dropped."""
    run = _processed_run(tmp_path)
    copy = tmp_path / "x[" / "i]" / "d[b]"  # the path holds '[/i]' and '[b]'
    shutil.copytree(tmp_path / "data-1", copy)
    console = Console(record=True, width=400)
    dlf_api.train(dlf_api.load_config(run / "config.yaml", [f"data.path={copy}", "train.epochs=2"]), resume=run,
                  console=console)
    assert f"data.path: {tmp_path / 'data-1'} -> {copy}" in console.export_text(), console.export_text()
