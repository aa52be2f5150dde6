"""Analyses: the planted synthetic components, grad-norm logging, the linear probe, `dlf analyze`."""
import csv
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch
from rich.console import Console
from typer.testing import CliRunner

import dlf
from dlf.config import load_config
from dlf.data.synthetic import SyntheticConfig, generate
from dlf.models import build_model, get_entry
from dlf.train.grad_norms import GradNormLogger, parameter_groups, read_grad_norms


def test_synthetic_components_rebuild_the_true_logit():
    # noise 0: prob = sigmoid(b + s1 first + s2 pair + s3 triple) exactly, so logit(prob) - signal is one constant
    cfg = SyntheticConfig(rows=3_000, max_cardinality=200, noise=0.0, first_order=0.7, pairwise=1.1,
                          higher_order=0.5, zipf=1.2, pairs=16, triples=6, interaction_max_cardinality=2_000)
    d = generate(cfg)
    biases = []
    for split in ("train", "valid", "test"):
        ds, comp = getattr(d, split), d.components[split]
        assert set(comp) == {"first", "pair", "triple"}
        assert all(len(c) == len(ds) for c in comp.values())
        signal = 0.7 * comp["first"] + 1.1 * comp["pair"] + 0.5 * comp["triple"]
        p = ds.prob.astype(np.float64)
        b = np.log(p / (1 - p)) - signal
        assert b.std() < 1e-6
        biases.append(b.mean())
    assert np.ptp(biases) < 1e-6
    # each component is standardised over all rows and they are distinct signals
    allrows = {k: np.concatenate([d.components[s][k] for s in ("train", "valid", "test")]) for k in ("first", "pair")}
    assert abs(allrows["first"].std() - 1) < 1e-6 and abs(allrows["pair"].mean()) < 1e-6
    assert abs(np.corrcoef(allrows["first"], allrows["pair"])[0, 1]) < 0.5


# ---------------------------------------------------------------- gradient norms


TINY_DATA = ["data.synthetic.rows=20000", "data.synthetic.max_cardinality=200", "data.synthetic.categorical=6",
             "data.synthetic.numeric=2", "data.synthetic.first_order=1.0", "data.synthetic.pairwise=1.2",
             "data.synthetic.higher_order=1.0", "data.synthetic.noise=0.3", "data.synthetic.click_rate=0.25",
             "data.synthetic.seed=2025", "data.synthetic.zipf=1.2", "data.synthetic.pairs=16",
             "data.synthetic.triples=6", "data.synthetic.interaction_max_cardinality=2000",
             "data.synthetic.latent_dim=4", "data.synthetic.min_cardinality=3", "data.synthetic.missing_rate=0.15",
             "data.synthetic.multi_valued=true", "data.synthetic.multi_vocab=40", "data.synthetic.multi_max_len=5",
             "data.synthetic.splits=[0.8,0.1,0.1]"]  # all explicit: the generator's defaults may change
TINY_DLF = ["model.embedding_dim=8", "model.layers=2", "model.rank=4", "model.interaction_tokens=4",
            "model.implicit_tokens=4", "model.hidden=32", "model.attention_heads=2"]
TINY_TRAIN = ["train.epochs=3", "train.batch_size=256", "train.lr=0.003", "train.progress=false",
              "train.tensorboard=false", "train.seed=7", "train.threads=1"]


def _small(name):
    cfg = get_entry(name).default_config()
    for key, value in {"embedding_dim": 4, "hidden_units": (8,), "mlp1_hidden_units": (8,), "mlp2_hidden_units": (8,),
                       "fs_hidden_units": (8,), "layers": 2, "rank": 2, "interaction_tokens": 2, "implicit_tokens": 2,
                       "hidden": 8, "attention_heads": 2}.items():
        if hasattr(cfg, key):
            setattr(cfg, key, value)
    return cfg


@pytest.mark.parametrize("name, expected", [
    ("dlf", {("embedding", 0), ("head", 0)} | {(b, layer) for b in ("alpha", "beta", "gamma", "fusion", "gate", "norm")
                                                for layer in (1, 2)}),
    ("deepfm", {("embedding", 0), ("linear", 0), ("dnn", 0)}),
    ("dcnv2", {("embedding", 0), ("cross", 1), ("cross", 2), ("cross", 3), ("dnn", 0), ("head", 0)}),
    ("finalmlp", {("embedding", 0), ("mlp1", 0), ("mlp2", 0), ("gate1", 0), ("gate2", 0), ("fusion", 0)}),
])
def test_parameter_groups_name_the_branches_and_streams(small_feature_map, name, expected):
    model = build_model(name, small_feature_map, _small(name))
    groups = parameter_groups(model)
    assert expected <= set(groups)
    # every trainable parameter is in exactly one group
    ids = [id(p) for ps in groups.values() for p in ps]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_logger_writes_the_norms_of_the_current_gradients(tmp_path, small_feature_map):
    torch.manual_seed(0)
    model = build_model("dlf", small_feature_map, _small("dlf"))
    batch = random_batch(small_feature_map, 32)
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    log = GradNormLogger(tmp_path / "g.csv", model, every=2)
    assert not log.maybe_log(1, 1) and log.maybe_log(2, 1)
    rows = {(r["group"], r["layer"]): r for r in read_grad_norms(tmp_path / "g.csv")}
    alpha1 = list(model.layers[0].fmb_x0.parameters())
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in alpha1))
    assert rows[("alpha", 1)]["grad_norm"] == pytest.approx(expected, rel=1e-5)
    assert rows[("alpha", 1)]["params"] == sum(p.numel() for p in alpha1)
    total = math.sqrt(sum(r["grad_norm"] ** 2 for r in rows.values()))
    assert total == pytest.approx(float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])),
                                  rel=1e-4)
    # resuming at step 2 keeps rows up to step 2 and drops later ones
    log.maybe_log(4, 1)
    GradNormLogger(tmp_path / "g.csv", model, every=2, resume_step=2)
    assert {r["step"] for r in read_grad_norms(tmp_path / "g.csv")} == {2}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    quiet = Console(quiet=True)
    dlf.train(load_config(None, TINY_DATA + TINY_DLF + TINY_TRAIN + ["train.grad_norm_every_steps=4"], model="dlf"),
              out=root / "dlf", console=quiet)
    deepfm = ["model.embedding_dim=4", "model.hidden_units=[16,16]", "train.epochs=1", "train.batch_size=256",
              "train.progress=false", "train.tensorboard=false", "train.threads=1", "train.grad_norm_every_steps=4"]
    dlf.train(load_config(None, TINY_DATA + deepfm, model="deepfm"),
              out=root / "deepfm", console=quiet)
    return root


def test_training_logs_finite_norms_per_branch_and_layer(trained_runs):
    rows = read_grad_norms(trained_runs / "dlf" / "grad_norms.csv")
    steps = sorted({r["step"] for r in rows})
    metrics = json.loads((trained_runs / "dlf" / "metrics.json").read_text())
    assert steps == list(range(4, metrics["global_steps"] + 1, 4))
    assert {r["epoch"] for r in rows} == {1, 2, 3}
    for r in rows:
        assert math.isfinite(r["grad_norm"]) and math.isfinite(r["param_norm"]) and r["param_norm"] > 0
    for branch in ("alpha", "beta", "gamma", "fusion"):
        for layer in (1, 2):
            mine = [r["grad_norm"] for r in rows if r["group"] == branch and r["layer"] == layer]
            assert len(mine) == len(steps) and min(mine) > 0
    deepfm = read_grad_norms(trained_runs / "deepfm" / "grad_norms.csv")
    assert {r["group"] for r in deepfm} == {"embedding", "linear", "dnn"}
    assert all(r["grad_norm"] > 0 and math.isfinite(r["grad_norm"]) for r in deepfm)


# ---------------------------------------------------------------- the linear probe

def test_ridge_probe_recovers_a_linear_signal_and_not_noise():
    from dlf.bench.analyze import ridge_probe

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 20))
    w = rng.standard_normal(20)
    y = {"lin": x @ w, "noise": rng.standard_normal(1500)}
    parts = [slice(0, 1000), slice(1000, 1250), slice(1250, 1500)]
    args = [a for s in parts for a in (x[s], {k: v[s] for k, v in y.items()})]
    out = ridge_probe(*args)
    assert out["lin"]["r2"] > 0.99 and out["noise"]["r2"] < 0.05
    # wider than max_features: random projection, still (nearly) linear-recoverable when the signal is low-rank
    out = ridge_probe(*args, max_features=10)
    assert out["lin"]["probe_features"] == 10 and out["lin"]["features"] == 20


def test_probe_finds_more_low_order_signal_in_the_last_layer_after_training(trained_runs):
    from dlf.bench.analyze import probe_run

    results = probe_run(trained_runs / "dlf", rows=2000)
    r2 = {(r["weights"], r["layer"], r["target"]): r["r2"] for r in results}
    assert {k[1] for k in r2} == {0, 1, 2}
    # the trained model's last tokens carry the planted low-order signal better than its initial ones
    # (margins over train seeds 1, 2, 3, 7: >= 0.10 for low-order, >= 0.03 for pair; seed 7: 0.19 and 0.15)
    assert r2[("trained", 2, "low-order")] > r2[("init", 2, "low-order")] + 0.05
    assert r2[("trained", 2, "pair")] > r2[("init", 2, "pair")] + 0.02
    # and every R^2 is a sane number
    assert all(-1.0 < v <= 1.0 for v in r2.values())


def test_probe_of_weights_that_do_not_fit_names_the_keys(trained_runs, tmp_path):
    import shutil

    from dlf.bench.analyze import AnalysisError, probe_run

    run = tmp_path / "dlf"
    shutil.copytree(trained_runs / "dlf", run)
    shutil.copyfile(trained_runs / "deepfm" / "model.safetensors", run / "model.safetensors")
    with pytest.raises(AnalysisError, match=r"model\.safetensors: does not fit model 'dlf': \d+ missing key"):
        probe_run(run, rows=500)


def test_cli_analyze_writes_the_plots(trained_runs, tmp_path):
    res = CliRunner().invoke(dlf_app(), ["analyze", str(trained_runs / "dlf"), str(trained_runs / "deepfm"),
                                         "--out", str(tmp_path), "--probe-rows", "1000"])
    assert res.exit_code == 0, res.output
    for name in ("grad_norms-dlf.png", "grad_norms-deepfm.png", "probe.png", "probe.csv", "analysis.md"):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "analysis.md").read_text()
    assert "| alpha |" in text and "| dnn |" in text and "low-order" in text
    with (tmp_path / "probe.csv").open() as f:
        assert {r["weights"] for r in csv.DictReader(f)} == {"init", "trained"}
    res = CliRunner().invoke(dlf_app(), ["analyze", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "not a run directory" in res.output


def test_cli_analyze_of_a_cut_off_grad_norms_csv_is_one_line(trained_runs, tmp_path):
    """A run killed while writing grad_norms.csv ends in half a line: was a TypeError traceback from float(None)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "deepfm", run)
    (run / "grad_norms.csv").write_bytes((run / "grad_norms.csv").read_bytes()[:-25])
    res = CliRunner().invoke(dlf_app(), ["analyze", str(run), "--out", str(tmp_path / "a"), "--no-probe"])
    lines = (run / "grad_norms.csv").read_text().count("\n") + 1  # the last one, cut short: named
    assert res.exit_code == 2 and re.search(rf"grad_norms.csv: not a readable grad_norms.csv \(line {lines}: expected "
                                            r"(an integer|a number) in column '\w+', got", res.output), res.output


def test_cli_analyze_of_one_variant_from_two_benches_keeps_both_plots(trained_runs, tmp_path):
    """Both runs were labelled 'deepfm/seed-1': the second grad_norms png overwrote the first."""
    import shutil

    runs = [tmp_path / bench / "deepfm" / "seed-1" for bench in ("a", "b")]
    for run in runs:
        shutil.copytree(trained_runs / "deepfm", run)
    res = CliRunner().invoke(dlf_app(), ["analyze", *map(str, runs), "--out", str(tmp_path / "x"), "--no-probe"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "x").glob("grad_norms-*.png"))) == 2
    text = (tmp_path / "x" / "analysis.md").read_text()
    assert f"## Gradient norms: {runs[0]} (deepfm)" in text and f"## Gradient norms: {runs[1]} (deepfm)" in text


def test_cli_analyze_of_run_folders_whose_names_share_a_first_word_keeps_both_plots(trained_runs, tmp_path):
    """The png was named after the label's first word: runs 'my run' and 'my run2' both wrote grad_norms-my.png."""
    import shutil

    runs = [tmp_path / name for name in ("my run", "my run2")]
    for run in runs:
        shutil.copytree(trained_runs / "deepfm", run)
    res = CliRunner().invoke(dlf_app(), ["analyze", *map(str, runs), "--out", str(tmp_path / "x"), "--no-probe"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "x").glob("grad_norms-*.png")) == [
        "grad_norms-my run.png", "grad_norms-my run2.png"]


def test_cli_analyze_into_a_path_that_cannot_be_a_folder_is_one_line(trained_runs, tmp_path):
    """--out below a file was a NotADirectoryError traceback."""
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(dlf_app(), ["analyze", str(trained_runs / "deepfm"), "--out", str(tmp_path / "file" / "a"),
                                         "--no-probe"])
    assert res.exit_code == 2 and "cannot write the analysis: Not a directory" in res.output, res.output


def dlf_app():
    from dlf.cli import app
    return app



@pytest.mark.parametrize("name,cut,message", [
    ("metrics.json", 100, "metrics.json: not readable JSON (Unterminated string"),
    ("model.safetensors", 1000, "model.safetensors: not readable weights (Error while deserializing header")])
def test_cli_analyze_of_a_cut_off_metrics_or_model_file_is_one_line(trained_runs, tmp_path, name, cut, message):
    """A metrics.json or model.safetensors cut short (a full disk, a copy interrupted) was a traceback."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "dlf", run)
    (run / name).write_bytes((run / name).read_bytes()[:cut])
    res = CliRunner().invoke(dlf_app(), ["analyze", str(run), "--probe-rows", "200"])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output


def test_cli_analyze_of_an_unfinished_run_shows_its_gradient_norms(trained_runs, tmp_path):
    """A DLF run killed before model.safetensors: the probe's error stopped the whole analysis (no analysis.md, and
    none for the other runs given), though its grad_norms.csv so far is what one looks at; the probe is now skipped."""
    import shutil

    run = tmp_path / "killed"
    shutil.copytree(trained_runs / "dlf", run)
    (run / "model.safetensors").unlink()
    (run / "metrics.json").unlink()
    res = CliRunner().invoke(dlf_app(), ["analyze", str(run), "--out", str(tmp_path / "a"), "--probe-rows", "200"])
    assert res.exit_code == 0 and "probe skipped (no model.safetensors: the run has not finished)" in res.output
    assert "| alpha |" in (tmp_path / "a" / "analysis.md").read_text()


def test_analyze_of_a_run_whose_test_split_has_one_class(tmp_path):
    """Its oracle test AUC is null in metrics.json: the check that the regenerated data are the run's subtracted it
    (a TypeError traceback)."""
    from dlf.bench.analyze import probe_run

    run = tmp_path / "run"
    dlf.train(load_config(None, ["data.synthetic.rows=100", "data.synthetic.click_rate=0.01", "train.monitor=logloss",
                                 "train.epochs=1", *TINY_DLF, *TINY_TRAIN[1:]]), out=run, console=Console(quiet=True))
    assert json.loads((run / "metrics.json").read_text())["oracle_test"]["auc"] is None
    logs = []
    assert probe_run(run, rows=100, log=logs.append) and logs == []


def test_the_analysis_says_how_many_rows_the_probe_used(trained_runs, tmp_path):
    """analysis.md gave the probe's R² without the rows behind it: --probe-rows 20000 (the default) on a small
    synthetic dataset fits on its whole train split, which only the console said."""
    data = generate(load_config(trained_runs / "dlf" / "config.yaml").data.synthetic)
    res = CliRunner().invoke(dlf_app(), ["analyze", str(trained_runs / "dlf"), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    fit, test = len(data.train), min(10_000, len(data.valid), len(data.test))
    assert (f"Rows (probe fit on train / ridge strength chosen on as many validation rows / R² on test): "
            f"dlf (dlf): {fit:,} / {test:,}.") in (tmp_path / "analysis.md").read_text()
    with (tmp_path / "probe.csv").open() as f:
        assert {(r["fit_rows"], r["test_rows"]) for r in csv.DictReader(f)} == {(str(fit), str(test))}
