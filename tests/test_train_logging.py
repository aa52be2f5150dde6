"""What a run logs for people: TensorBoard events across a resume, the notes when an optional package is missing."""
import sys

from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dlf
from dlf.config import load_config

LR = ["data.synthetic.rows=2000", "data.synthetic.max_cardinality=50", "train.batch_size=256", "train.threads=1",
      "train.progress=false", "train.eval_every_steps=3"]


def _scalars(run, tag):
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_a_resumed_run_keeps_the_tensorboard_events_of_its_checkpoint_step(tmp_path):
    """The resumed writer purged steps >= the checkpoint's step: the evaluation at that step (in the checkpoint's
    history, so never written again) vanished from TensorBoard; here the end of epoch 1, step 7."""
    run = tmp_path / "run"
    quiet = Console(quiet=True)
    dlf.train(load_config(None, LR + ["train.epochs=1"], model="lr"), out=run, console=quiet)
    metrics = dlf.train(load_config(run / "config.yaml", ["train.epochs=2"]), resume=run, console=quiet)
    steps = [r["step"] for r in metrics["history"]]
    assert steps == [3, 6, 7, 9, 12, 14]
    assert _scalars(run, "valid/auc") == _scalars(run, "train/epoch_loss") == steps


def test_without_tensorboard_and_matplotlib_a_run_says_what_it_skipped(tmp_path, monkeypatch):
    """logging.py promises a one-line note per optional package that is missing; without matplotlib there was none
    (learning_curves.png was silently not written)."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of a None entry: ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    console = Console(record=True, width=200)
    dlf.train(load_config(None, LR + ["train.epochs=1"], model="lr"), out=tmp_path / "run", console=console)
    text = console.export_text()
    assert "tensorboard is not installed: no TensorBoard event files (pip install tensorboard)" in text
    assert "matplotlib is not installed: no learning_curves.png (pip install matplotlib)" in text
    assert not (tmp_path / "run" / "learning_curves.png").exists() and (tmp_path / "run" / "train_log.csv").is_file()



def test_an_undefined_validation_auc_is_an_empty_csv_cell_and_no_tensorboard_point(tmp_path):
    """A one-class validation split (train.monitor=logloss) has no AUC: metrics.json said null and the console n/a,
    but train_log.csv held 'nan' and TensorBoard NaN points."""
    import csv

    run = tmp_path / "run"
    cfg = load_config(None, LR + ["train.epochs=1", "data.synthetic.rows=100", "data.synthetic.click_rate=0.01",
                                  "train.monitor=logloss"], model="lr")
    dlf.train(cfg, out=run, console=Console(quiet=True))
    rows = list(csv.DictReader((run / "train_log.csv").open()))
    assert rows and all(r["val_auc"] == "" and float(r["val_logloss"]) > 0 for r in rows)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert "valid/logloss" in events.Tags()["scalars"] and "valid/auc" not in events.Tags()["scalars"]


def test_the_run_charts_leave_the_callers_matplotlib_backend_and_figures_alone(tmp_path):
    """plot_learning_curves (and the bench's charts) ran matplotlib.use('Agg', force=True): after dlf.train(out=...)
    a notebook's backend was Agg for the rest of the session, so its own plots no longer showed."""
    import matplotlib
    import matplotlib.pyplot as plt

    from dlf.bench.report import plot_chart
    from dlf.train.logging import plot_learning_curves

    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # stands in for a notebook's inline backend
    try:
        mine = plt.figure()
        history = [{"step": s, "train_loss": 0.5, "val_auc": 0.7, "val_logloss": 0.4, "lr": 1e-3, "best": s == 2}
                   for s in (1, 2)]
        assert plot_learning_curves(history, tmp_path / "curves.png")
        rows = [{"dataset": "demo", "variant": "lr", "model": "lr", "auc_mean": 0.74, "auc_std": 0.01, "oracle": None,
                 "ok": 1, "seeds": 1}]
        assert plot_chart(rows, tmp_path / "bench.png") is None
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [mine.number]
        assert (tmp_path / "curves.png").read_bytes()[:4] == (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        plt.close("all")
        plt.switch_backend(before)
