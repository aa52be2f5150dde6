"""On the default synthetic data DLF (demo size) beats logistic regression clearly,
and neither beats the oracle beyond sampling noise. The slowest test (~1 min)."""
from pathlib import Path

import pytest
from rich.console import Console

import dlf
from dlf.config import load_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def results():
    quiet = Console(quiet=True)
    # one epoch puts DLF clearly above LR (its best comes after 2-3); LR at lr 0.01 converges in ~2 epochs
    dlf_run = dlf.train(load_config(DEMO, ["train.progress=false", "train.epochs=1"]), console=quiet)
    lr_run = dlf.train(load_config(None, ["train.progress=false", "train.epochs=2", "train.lr=0.01"], model="lr"),
                       console=quiet)
    return dlf_run, lr_run


def test_dlf_beats_logistic_regression_by_a_clear_margin(results):
    dlf_run, lr_run = results
    assert dlf_run["test"]["auc"] > lr_run["test"]["auc"] + 0.02


def test_no_model_beats_the_oracle_beyond_noise(results):
    for run in results:
        oracle = run["oracle_test"]
        assert run["test"]["auc"] <= oracle["auc"] + 0.005
        assert run["test"]["logloss"] >= oracle["logloss"] - 0.005
    assert results[0]["oracle_test"] == results[1]["oracle_test"]  # same data, same truth
