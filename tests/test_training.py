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


def test_a_plateau_never_raises_an_lr_that_is_below_min_lr():
    """An lr below min_lr (train.embedding_lr=1e-7, or min_lr set above lr) was raised to min_lr by a 'decay'."""
    low, high = _opt(1e-7), _opt(1e-3)
    ctl = PlateauController(decay=0.1, patience=10, min_lr=1e-6)
    ctl.step(1.0, low, high)
    ctl.step(0.0, low, high)
    assert low.param_groups[0]["lr"] == 1e-7 and high.param_groups[0]["lr"] == pytest.approx(1e-4)


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


ONE_CLASS = ["data.synthetic.rows=3000", "data.synthetic.click_rate=0.001", "data.synthetic.max_cardinality=50",
             "model.embedding_dim=4", "model.layers=1", "model.rank=2", "model.interaction_tokens=2",
             "model.implicit_tokens=2", "model.hidden=8", "train.epochs=2", "train.batch_size=256",
             "train.progress=false"]  # click rate 0.1%: no click in the 300 validation and 300 test rows


def test_one_class_validation_split_under_an_auc_monitor_is_a_clear_error(tmp_path):
    """Its AUC was NaN: no evaluation counted as an improvement, the run stopped early after `patience` of them and
    said 'restoring epoch 0' (nothing to restore), with 'val AUC nan' as the only hint."""
    import dlf
    from dlf.config import load_config
    from dlf.train.trainer import TrainingError

    for monitor in ("auc", "auc-logloss"):
        with pytest.raises(TrainingError, match=f"train.monitor={monitor} needs both classes in the validation split, "
                                                r"which has only label 0 \(300 rows\)"):
            dlf.train(load_config(None, ONE_CLASS + [f"train.monitor={monitor}"]))


def test_one_class_splits_under_a_logloss_monitor_train_and_say_auc_is_undefined(tmp_path):
    import json

    from rich.console import Console

    import dlf
    from dlf.config import load_config

    console = Console(record=True, width=300)
    metrics = dlf.train(load_config(None, ONE_CLASS + ["train.monitor=logloss", "train.patience=5"]),
                        out=tmp_path / "run", console=console)
    text = console.export_text()
    assert "val AUC n/a" in text and "nan" not in text.lower()
    assert "test auc, calibration undefined on the test split (300 rows, 0 positive)" in text
    assert metrics["best_epoch"] >= 1  # logloss improved: the best weights are a real evaluation's
    # metrics.json is JSON (NaN is not): undefined metrics are null
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert saved["test"]["auc"] is None and saved["test"]["logloss"] > 0
    assert saved["history"][0]["val_auc"] is None and math.isnan(metrics["test"]["auc"])


def test_empty_validation_split_is_a_clear_error():
    import numpy as np

    from dlf.data.dataset import ArrayDataset
    from dlf.data.synthetic import generate
    from dlf.config import load_config
    from dlf.models import build_model
    from dlf.train.trainer import TrainingError, fit

    cfg = load_config(None, ONE_CLASS)
    data = generate(cfg.data.synthetic)
    v = data.valid
    empty = ArrayDataset(v.categorical[:0], v.numeric[:0], v.multi[:0], v.label[:0])
    with pytest.raises(TrainingError, match="validation split is empty"):
        fit(build_model("dlf", data.feature_map, cfg.model), data.train, empty, cfg.train)
    assert np.all(v.label == 0)


def test_a_training_split_too_small_for_one_step_is_a_clear_error():
    """One row: zero steps per epoch, so every epoch re-evaluated the initial weights with 'loss 0.0000'."""
    from dlf.config import load_config
    from dlf.data.dataset import ArrayDataset
    from dlf.data.synthetic import generate
    from dlf.models import build_model
    from dlf.train.trainer import TrainingError, fit

    cfg = load_config(None, ONE_CLASS[:1] + ONE_CLASS[2:])
    data = generate(cfg.data.synthetic)
    t = data.train
    one = ArrayDataset(t.categorical[:1], t.numeric[:1], t.multi[:1], t.label[:1])
    with pytest.raises(TrainingError, match=r"the training split has 1 row\(s\): too few for one training step"):
        fit(build_model("dlf", data.feature_map, cfg.model), one, data.valid, cfg.train)


def test_train_threads_apply_to_that_run_only():
    """torch.set_num_threads is process-wide: after dlf.train(threads=1) a notebook stayed on 1 thread, and a later
    run with threads=0 ('torch's default') ran on 1."""
    from rich.console import Console

    import dlf
    from dlf.config import load_config

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dlf.train(load_config(None, ONE_CLASS[:1] + ONE_CLASS[2:] + ["train.epochs=1", "train.threads=1"]),
                  console=Console(quiet=True))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_non_finite_validation_predictions_stop_the_run_with_a_clear_error(monkeypatch):
    """NaN predictions gave a NaN monitor value, counted as 'no improvement': the lr decayed and the run stopped
    early with the best weights of an earlier evaluation, the NaN in the log its only trace."""
    import importlib

    import numpy as np

    from dlf.config import load_config
    from dlf.data.synthetic import generate
    from dlf.models import build_model
    from dlf.train.trainer import TrainingError, fit

    trainer = importlib.import_module("dlf.train.trainer")
    monkeypatch.setattr(trainer, "predict_proba", lambda model, data, *a, **k: np.full(len(data), np.nan, np.float32))
    cfg = load_config(None, ONE_CLASS[:1] + ONE_CLASS[2:])
    data = generate(cfg.data.synthetic)
    with pytest.raises(TrainingError, match=r"validation auc-logloss is nan at epoch 1, step 10: the model's "
                                            "predictions are not finite"):
        fit(build_model("dlf", data.feature_map, cfg.model), data.train, data.valid, cfg.train)


def test_epoch_line_shows_validation_gauc_when_the_data_has_groups():
    import numpy as np
    from rich.console import Console

    from dlf.config import load_config
    from dlf.data.dataset import ArrayDataset
    from dlf.data.synthetic import generate
    from dlf.models import build_model
    from dlf.train.trainer import fit

    cfg = load_config(None, ONE_CLASS[:1] + ONE_CLASS[2:] + ["train.epochs=1"])
    data = generate(cfg.data.synthetic)
    v = data.valid
    grouped = ArrayDataset(v.categorical, v.numeric, v.multi, v.label, np.arange(len(v)) % 7)
    console = Console(record=True, width=300)
    result = fit(build_model("dlf", data.feature_map, cfg.model), data.train, grouped, cfg.train, console)
    assert f"val gAUC {result['history'][0]['val_gauc']:.4f}" in console.export_text()


def test_a_config_changed_after_load_config_is_checked_by_dlf_train():
    """cfg.train.batch_size = 0 set in a notebook skipped every check: a ZeroDivisionError traceback."""
    import importlib

    import dlf
    from dlf.config import ConfigError, load_config

    cfg = load_config(None, ONE_CLASS[:1] + ONE_CLASS[2:])
    cfg.train.batch_size = 0
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1, got 0"):
        dlf.train(cfg)
    cfg.train.batch_size, cfg.train.lr = 256, "0.01"  # the YAML reading of a string number still applies
    assert importlib.import_module("dlf.api")._resolve(cfg).train.lr == 0.01


def test_weights_that_diverged_to_inf_are_not_checkpointed(tmp_path):
    """train.lr=1e39 made every weight inf at step 1 while its loss was finite: the step-1 checkpoint held them, and
    each resume from it, at any train.lr, stopped again with 'training loss became nan at epoch 1, step 2'."""
    from rich.console import Console

    import dlf
    from dlf.config import load_config
    from dlf.train.trainer import TrainingError

    run = tmp_path / "run"
    cfg = load_config(None, ["data.synthetic.rows=2000", "train.batch_size=256", "train.threads=1",
                             "train.progress=false", "train.lr=1e39", "train.checkpoint_every_steps=1"], model="lr")
    with pytest.raises(TrainingError, match=r"the weights are not finite after step 1 \(the update diverged\): not "
                                            "checkpointed"):
        dlf.train(cfg, out=run, console=Console(quiet=True))
    assert not list((run / "checkpoints").glob("*.safetensors"))


def test_train_leaves_the_callers_random_streams_where_they_were():
    """dlf.train reseeded torch's, numpy's and Python's global generators with train.seed and left them so: a notebook
    drawing np.random.choice between runs drew the same numbers after every run."""
    import random

    import numpy as np
    from rich.console import Console

    import dlf
    from dlf.config import load_config

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    expected = draws()
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    dlf.train(load_config(None, ONE_CLASS[:1] + ONE_CLASS[2:] + ["train.epochs=1", "train.threads=1"]),
              console=Console(quiet=True))
    assert draws() == expected


@pytest.mark.parametrize("caller", ["float64_default", "grad_disabled"])
def test_train_works_whatever_dtype_or_grad_mode_the_caller_set_for_itself(caller):
    """A notebook's torch.set_default_dtype(torch.float64) (float64 weights, float32 inputs: 'expected scalar type
    Double but found Float') or torch.set_grad_enabled(False) ('element 0 of tensors does not require grad') made
    dlf.train fail inside torch; the caller's setting is back after the run."""
    from rich.console import Console

    import dlf
    from dlf.config import load_config

    cfg = load_config(None, ONE_CLASS[:1] + ONE_CLASS[2:] + ["train.epochs=1", "train.threads=1"])
    expected = dlf.train(cfg, console=Console(quiet=True))["test"]
    try:
        torch.set_default_dtype(torch.float64) if caller == "float64_default" else torch.set_grad_enabled(False)
        assert dlf.train(cfg, console=Console(quiet=True))["test"] == expected
        if caller == "float64_default":
            assert torch.get_default_dtype() == torch.float64
        else:
            assert not torch.is_grad_enabled()
    finally:
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)
