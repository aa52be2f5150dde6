"""Training options (optimisers, L2, evaluation every N steps) and what a run directory holds."""
import csv
import json

import pytest
import torch

import dlf
from dlf.config import ConfigError, load_config
from dlf.train.trainer import build_optimizer, l2_penalty, split_params

TINY = ["data.synthetic.rows=2000", "data.synthetic.max_cardinality=200", "model.embedding_dim=8", "model.layers=1",
        "model.rank=2", "model.interaction_tokens=2", "model.implicit_tokens=2", "model.hidden=16",
        "train.batch_size=256", "train.threads=1", "train.progress=false"]


def _cfg(*extra):
    return load_config(None, TINY + list(extra))


def _model(cfg):
    from dlf.data.synthetic import generate
    from dlf.models import build_model
    return build_model(cfg.model_name, generate(cfg.data.synthetic).feature_map, cfg.model)


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                      ("adagrad", torch.optim.Adagrad)])
def test_optimizer_choice(name, cls):
    cfg = _cfg(f"train.optimizer={name}", "train.weight_decay=0.01")
    opt = build_optimizer(_model(cfg), cfg.train)
    assert type(opt) is cls and opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[0]["lr"] == 1e-3


def test_defaults_are_the_authors_settings():
    t = _cfg().train
    assert (t.optimizer, t.lr, t.clip_norm, t.monitor, t.lr_decay, t.patience) == ("adam", 1e-3, 10.0, "auc-logloss",
                                                                                   0.1, 2)
    assert t.embedding_l2 == t.net_l2 == 0 and t.eval_every_steps == 0 and t.checkpoint_every_steps == 0
    with pytest.raises(ConfigError, match="train.optimizer"):
        _cfg("train.optimizer=sgd")
    with pytest.raises(ConfigError, match="train.embedding_l2 must be >= 0"):
        _cfg("train.embedding_l2=-1")


def test_l2_penalty_splits_embeddings_from_network_weights():
    cfg = _cfg("train.embedding_l2=0.5", "train.net_l2=0.25")
    model = _model(cfg)
    emb, net = split_params(model)
    assert {id(p) for p in emb} == {id(p) for p in model.embedding.parameters()}
    assert net and all(p.dim() > 1 for p in net) and not {id(p) for p in emb} & {id(p) for p in net}
    want = 0.5 * sum(p.pow(2).sum() for p in emb) + 0.25 * sum(p.pow(2).sum() for p in net)
    assert torch.allclose(l2_penalty(emb, net, cfg.train), want)
    assert l2_penalty(emb, net, _cfg().train) is None
    # and fit() applies it: a strong embedding L2 keeps the table near zero while plain training grows it
    from dlf.data.synthetic import generate
    from dlf.train.trainer import fit
    norms = []
    for extra in ([], ["train.embedding_l2=1000"]):
        c = _cfg("train.epochs=1", *extra)
        torch.manual_seed(0)
        m = _model(c)
        d = generate(c.data.synthetic)
        fit(m, d.train, d.valid, c.train)
        norms.append(float(m.embedding.table.detach().norm()))
    assert norms[1] < 0.5 * norms[0]


def test_net_l2_leaves_a_two_dimensional_bias_alone():
    # DLF's residual gate bias is tokens x 1 (one per token, initialised to 1): by its shape it was a "weight matrix",
    # so train.net_l2 pulled every gate towards sigmoid(0) while docs/training.md promises no L2 on biases
    model = _model(_cfg())
    _, net = split_params(model)
    gate_biases = [p for n, p in model.named_parameters() if n.endswith("gate.bias")]
    assert gate_biases and all(p.dim() == 2 for p in gate_biases)
    assert not {id(p) for p in gate_biases} & {id(p) for p in net}


def test_eval_every_steps_and_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    metrics = dlf.train(_cfg("train.epochs=2", "train.eval_every_steps=3", "train.log_every_steps=2",
                             "train.patience=10"), out=out)
    steps = [r["step"] for r in metrics["history"]]
    # 1600 train rows / 256 = 7 steps per epoch: evaluations at 3, 6, 7 (epoch end), 9, 12, 14 (epoch end)
    assert steps == [3, 6, 7, 9, 12, 14]
    assert [r["epoch_end"] for r in metrics["history"]] == [False, False, True, False, False, True]
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == steps and float(rows[-1]["val_auc"]) == metrics["history"][-1]["val_auc"]
    png = (out / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["torch"] and env["torch_threads"] == 1 and "git_commit" in env and env["world_size"] == 1
    assert "data_schema_hash" in env
    assert (out / "config.yaml").is_file() and (out / "model.safetensors").is_file()
    assert len(list((out / "checkpoints").glob("step-*.safetensors"))) == 2  # keep_checkpoints=2 of 2 epochs


def test_grad_norm_log_of_a_killed_run_drops_the_row_the_kill_cut_short(tmp_path):
    """The killed run's last row can be cut mid-line: '1' (of step 12) was kept as a row of step 1 with empty
    values (read_grad_norms, and so dlf analyze, then failed on it); the file is also rewritten atomically."""
    from dlf.train.grad_norms import COLUMNS, GradNormLogger, read_grad_norms
    path = tmp_path / "grad_norms.csv"
    rows = "".join(f"{s},1,beta,1,10,0.5,0.1,2.0\r\n" for s in (2, 4))
    for cut in ("1", "", "12,1,be"):
        path.write_text(",".join(COLUMNS) + "\r\n" + rows + cut)
        GradNormLogger(path, torch.nn.Linear(2, 1), every=2, resume_step=5)
        assert [r["step"] for r in read_grad_norms(path)] == [2, 4], cut


def test_git_status_timing_out_does_not_stop_the_run(monkeypatch, tmp_path):
    """`git status` past its 10 s timeout (a large checkout) was a TimeoutExpired traceback before training began."""
    import subprocess
    from pathlib import Path

    from dlf.train import logging as run_logging
    real = subprocess.run

    def slow_status(cmd, *a, **k):
        if "status" in cmd:
            raise subprocess.TimeoutExpired(cmd, 10)
        return real(cmd, *a, **k)

    monkeypatch.setattr(run_logging.subprocess, "run", slow_status)
    commit = run_logging.git_commit(Path(run_logging.__file__).parent)
    assert commit is None or commit.endswith("-unknown-dirty")


def test_a_failing_learning_curve_plot_does_not_lose_the_weights_and_metrics(tmp_path, monkeypatch):
    """The plot was drawn first: when it raised, model.safetensors and metrics.json were never written."""
    import importlib

    from rich.console import Console

    def broken(*a, **k):
        raise RuntimeError("no usable font")

    monkeypatch.setattr(importlib.import_module("dlf.api"), "plot_learning_curves", broken)
    console = Console(record=True, width=300)
    dlf.train(_cfg("train.epochs=1"), out=tmp_path / "run", console=console)
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert "learning_curves.png not written (RuntimeError: no usable font)" in console.export_text()


def test_an_interrupted_save_of_the_final_weights_leaves_no_temporary_file(tmp_path, monkeypatch):
    """model.safetensors was written to .model.safetensors.tmp and renamed: Ctrl-C, SIGTERM or a full disk during
    that save left the temporary file in the run folder."""
    import os

    from rich.console import Console

    rename = os.replace

    def interrupted(src, dst, *a, **k):
        if os.fspath(dst).endswith("model.safetensors"):
            raise KeyboardInterrupt
        return rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dlf.train(_cfg("train.epochs=1", "train.tensorboard=false"), out=tmp_path / "run", console=Console(quiet=True))
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "config.yaml" in names and "model.safetensors" not in names
    assert not [n for n in names if n.endswith(".tmp")], names


def test_a_fresh_run_refuses_a_folder_that_is_not_empty_and_not_a_dlf_run(tmp_path):
    """`--out .` in a project overwrote its config.yaml and metrics.json without a word."""
    from dlf.train.trainer import TrainingError
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("name: my-app\n")  # a config.yaml that is no dlf run's
    (project / "README.md").write_text("mine\n")
    with pytest.raises(TrainingError, match=r"run directory .*project \(--out\) is not empty and is not a dlf run "
                                            r"\(it holds README.md, config.yaml\); use an empty or new folder"):
        dlf.train(_cfg("train.epochs=1"), out=project)
    assert sorted(p.name for p in project.iterdir()) == ["README.md", "config.yaml"]
    assert (project / "config.yaml").read_text() == "name: my-app\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    dlf.train(_cfg("train.epochs=1", "train.tensorboard=false"), out=empty)  # an empty folder is fine
    # a dlf run folder keeps its behaviour: without checkpoints a fresh run writes over it (with: refused, --resume)
    for path in (empty / "checkpoints").iterdir():
        path.unlink()
    assert dlf.train(_cfg("train.epochs=1", "train.tensorboard=false"), out=empty)["epochs_run"] == 1
    with pytest.raises(TrainingError, match="already holds checkpoints of a run; continue it with --resume"):
        dlf.train(_cfg("train.epochs=1"), out=empty)


def test_resuming_with_another_batch_size_is_refused(tmp_path):
    """It only warned: the batches of the epoch to skip were counted in the old size (other rows were skipped) and
    the step counts of one run mixed two batch sizes."""
    from dlf.train.trainer import TrainingError
    run = tmp_path / "run"
    dlf.train(_cfg("train.epochs=1", "train.tensorboard=false"), out=run)
    with pytest.raises(TrainingError) as exc:
        dlf.train(_cfg("train.epochs=2", "train.batch_size=128"), resume=run)
    message = str(exc.value)
    assert ("was trained with train.batch_size=256, resumed with 128" in message and "\n" not in message
            and "resume with train.batch_size=256, or start a fresh run" in message)
    assert dlf.train(_cfg("train.epochs=2", "train.tensorboard=false"), resume=run)["epochs_run"] == 2  # same size


@pytest.mark.parametrize("overrides, message", [
    (["train.batch_size=255"], "train.batch_size=255 must be divisible by the world size 2"),
    (["train.precision=fp16", "train.device=cpu"], "fp16 needs a CUDA device"),
])
def test_process_and_device_checks_come_before_the_data_is_loaded(monkeypatch, tmp_path, overrides, message):
    # under torchrun started directly each rank runs this; the error came only after every rank loaded the data
    from dlf import api
    from dlf.train.distributed import DistContext
    from dlf.train.trainer import TrainingError

    def no_data(cfg):
        raise AssertionError("the data was loaded before the check")

    monkeypatch.setattr(api, "load_data", no_data)
    cfg = load_config(None, overrides)
    with pytest.raises(TrainingError, match=message):
        api._train(cfg, tmp_path / "run", None, None, DistContext(rank=0, world=2))
    assert not (tmp_path / "run").exists()


def test_row_sharded_ranks_shuffle_their_shards_independently():
    # ddp_sharding=rows: each rank reads rows rank, rank + world, ...; with one shuffle seed for all ranks, rank 1's
    # k-th row was always rank 0's + 1, so every global batch held pairs of neighbouring rows of the file
    import numpy as np
    from dlf.data.dataset import ArrayDataset
    from dlf.train.distributed import DistContext
    from dlf.train.trainer import epoch_batches

    n = 64
    data = ArrayDataset(np.zeros((n, 1), np.int64), np.arange(n, dtype=np.float32)[:, None],
                        np.zeros((n, 0, 1), np.int64), np.zeros(n, np.float32))
    rows = [[b.numeric[:, 0].long() for b in epoch_batches(data.shard(r, 2), 16, DistContext(rank=r, world=2),
                                                            "rows", seed=3, epoch=0)] for r in (0, 1)]
    assert sorted(torch.cat(rows[0] + rows[1]).tolist()) == list(range(n))  # every row once per epoch
    assert not all(torch.equal(b1, b0 + 1) for b0, b1 in zip(*rows))
    again = [b.numeric[:, 0].long() for b in epoch_batches(data.shard(1, 2), 16, DistContext(rank=1, world=2),
                                                           "rows", seed=3, epoch=0)]
    assert all(torch.equal(a, b) for a, b in zip(again, rows[1]))  # still a function of seed, epoch and rank


def test_ctrl_c_while_plotting_the_learning_curves_leaves_a_run_that_resume_finishes(tmp_path, monkeypatch):
    """metrics.json (what marks a run finished: dlf bench skips such a run) was written before the plot, so Ctrl-C
    while plotting left a 'finished' run without its learning_curves.png, and a bench rerun never drew it."""
    import importlib

    from rich.console import Console

    api = importlib.import_module("dlf.api")
    plot = api.plot_learning_curves

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "plot_learning_curves", interrupted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        dlf.train(_cfg("train.epochs=1"), out=run, console=Console(quiet=True))
    assert not (run / "metrics.json").exists()
    monkeypatch.setattr(api, "plot_learning_curves", plot)
    dlf.train(resume=run, console=Console(quiet=True))
    assert (run / "metrics.json").is_file() and (run / "learning_curves.png").is_file()


def test_a_run_directory_under_home_written_with_a_tilde_is_there(tmp_path, monkeypatch):
    """dlf.train(cfg, out='~/runs/x') from Python (no shell to expand '~') made a folder named '~' in the working
    directory; resume='~/runs/x' then said the run did not exist."""
    from rich.console import Console

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.synthetic.rows=400", "train.epochs=1", "train.batch_size=128", "train.threads=1",
                             "train.progress=false", "train.tensorboard=false"], model="lr")
    metrics = dlf.train(cfg, out="~/runs/x", console=Console(quiet=True))
    assert (tmp_path / "home/runs/x/metrics.json").is_file() and not (tmp_path / "~").exists()
    assert metrics["run_dir"] == str(tmp_path / "home/runs/x")
    assert dlf.train(resume="~/runs/x", console=Console(quiet=True))["test"] == metrics["test"]
