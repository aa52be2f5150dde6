import math

import pytest
import torch

from dlf.train.trainer import PlateauController, monitor_value


def _opt(lr=1e-3):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_plateau_decays_lr_and_stops_after_patience_on_a_scripted_sequence():
    opt = _opt()
    ctl = PlateauController(decay=0.1, patience=2, min_lr=1e-6)
    lrs, stops = [], []
    for value in [0.70, 0.72, 0.71, 0.73, 0.73, 0.725]:
        stops.append(ctl.step(value, opt))
        lrs.append(opt.param_groups[0]["lr"])
    # improvements reset the count; each non-improvement multiplies lr by 0.1; stop on the 2nd in a row
    assert stops == [False, False, False, False, False, True]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6])
    assert ctl.best == 0.73


def test_lr_never_goes_below_min_lr():
    opt = _opt(1e-3)
    ctl = PlateauController(decay=0.1, patience=10, min_lr=5e-5)
    ctl.step(1.0, opt)
    for _ in range(5):
        ctl.step(0.0, opt)
    assert opt.param_groups[0]["lr"] == 5e-5


def test_monitor_is_higher_is_better():
    m = {"auc": 0.8, "logloss": 0.45}
    assert monitor_value(m, "auc-logloss") == pytest.approx(0.35)
    assert monitor_value(m, "auc") == 0.8 and monitor_value(m, "logloss") == -0.45
    assert not math.isnan(monitor_value(m, "auc-logloss"))


def test_a_last_batch_of_one_row_is_dropped_not_a_batchnorm_crash():
    from rich.console import Console

    import dlf
    from dlf.config import load_config

    # 1001 train rows at batch 100: the 1-row tail would crash BatchNorm in training mode
    cfg = load_config(None, ["data.synthetic.rows=1251", "data.synthetic.splits=[0.8, 0.1, 0.1]",
                             "data.synthetic.max_cardinality=50", "model.embedding_dim=4", "model.layers=1",
                             "model.rank=2", "model.interaction_tokens=2", "model.implicit_tokens=2",
                             "model.hidden=8", "train.epochs=1", "train.batch_size=100", "train.progress=false"])
    metrics = dlf.train(cfg, console=Console(quiet=True))
    assert metrics["history"][0]["epoch"] == 1 and metrics["epochs_run"] == 1
