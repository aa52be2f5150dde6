"""`dlf bench` on a tiny synthetic set: the table, failures, resume, variants, search and the CLI."""
import csv
import io
import json
import math
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from scipy.stats import ttest_rel
from rich.console import Console
from typer.testing import CliRunner

import dlf
from dlf.bench.runner import (
    BenchError,
    build_config,
    load_spec,
    run_bench,
    run_overrides,
    search_points,
    spec_from_dict,
)
from dlf.bench.report import _vs_best, compare_to_best
from dlf.cli import app

TINY = {"data.synthetic.rows": 1200, "data.synthetic.max_cardinality": 50, "data.synthetic.categorical": 4,
        "data.synthetic.numeric": 1, "data.synthetic.interaction_max_cardinality": 2000, "train.epochs": 1,
        "train.batch_size": 256, "train.lr": 0.01,
        "model.embedding_dim": 4, "train.threads": 1}
QUIET = Console(quiet=True)


def tiny_spec(models, seeds=(1, 2), **extra):
    return spec_from_dict({"models": models, "seeds": list(seeds), "set": dict(TINY), **extra})


class CountingTrain:
    """dlf.train, recording each call (out or resume) and optionally raising KeyboardInterrupt."""

    def __init__(self, interrupt_on_call=None):
        self.calls, self.interrupt_on_call = [], interrupt_on_call

    def __call__(self, cfg, out=None, resume=None, console=None):
        self.calls.append((cfg.model_name, cfg.train.seed, "resume" if resume else "fresh"))
        if self.interrupt_on_call == len(self.calls):
            raise KeyboardInterrupt
        return dlf.train(cfg, out=out, resume=resume, console=console)


def test_two_models_two_seeds_give_mean_and_std(tmp_path):
    result = run_bench(tiny_spec(["lr", "fm"]), tmp_path, console=QUIET)
    assert not result.failed and not result.interrupted
    assert sorted((r["variant"], r["seed"]) for r in result.records) == [("fm", 1), ("fm", 2), ("lr", 1), ("lr", 2)]
    summary = json.loads((tmp_path / "summary.json").read_text())["rows"]
    report = (tmp_path / "report.md").read_text()
    for row in summary:
        aucs = [json.loads((tmp_path / "runs" / "synthetic" / row["variant"] / f"seed-{s}" / "metrics.json")
                           .read_text())["test"]["auc"] for s in (1, 2)]
        assert aucs[0] != aucs[1]  # the seed changes the run
        assert row["auc_mean"] == pytest.approx(statistics.mean(aucs))
        assert row["auc_std"] == pytest.approx(statistics.stdev(aucs))
        assert row["ok"] == 2 and row["parameters"] > 0 and row["epochs"] == 1 and row["samples_per_s"] > 0
        assert f"{row['auc_mean']:.4f} ± {row['auc_std']:.4f}" in report
    assert "oracle (true probabilities)" in report
    # the other variant against the best, paired by seed
    best, other = sorted(summary, key=lambda r: -r["auc_mean"])
    aucs = {r["variant"]: [json.loads((tmp_path / "runs" / "synthetic" / r["variant"] / f"seed-{s}" / "metrics.json")
                                      .read_text())["test"]["auc"] for s in (1, 2)] for r in summary}
    assert best["vs_best"] is None and other["vs_best"]["variant"] == best["variant"]
    assert other["vs_best"]["delta"] == pytest.approx(statistics.mean(aucs[other["variant"]])
                                                      - statistics.mean(aucs[best["variant"]]))
    assert other["vs_best"]["p"] == pytest.approx(ttest_rel(aucs[other["variant"]], aucs[best["variant"]]).pvalue)
    assert f"{other['vs_best']['delta']:+.4f} (p {other['vs_best']['p']:.2g}, 2 seeds)" in report
    # the common model.embedding_dim does not exist for LR: skipped there and said so, applied to FM
    assert "lr: model.embedding_dim" in report
    fm_cfg = yaml.safe_load((tmp_path / "runs/synthetic/fm/seed-1/config.yaml").read_text())
    assert fm_cfg["model"]["embedding_dim"] == 4 and fm_cfg["train"]["seed"] == 1
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_the_comparison_with_the_best_pairs_runs_by_seed():
    """Only the seeds both variants finished pair up; fewer than 2 pairs, or one difference on every seed, has no
    p-value (a t-test needs a spread)."""
    def row(variant, aucs, seeds=3):
        finished = [a for a in aucs.values() if a is not None]
        return {"dataset": "d", "variant": variant, "seeds": seeds, "ok": len(finished),
                "auc_mean": statistics.mean(finished) if finished else None,
                "auc_by_seed": {s: a for s, a in aucs.items() if a is not None}}

    best = row("best", {1: 0.80, 2: 0.82, 3: 0.81})
    partial = row("partial", {1: 0.79, 2: None, 3: 0.805})  # seed 2 failed
    shifted = row("shifted", {1: 0.79, 2: 0.81, 3: 0.80})  # 0.01 below on every seed
    single = row("single", {1: 0.70, 2: None, 3: None})
    failed = row("failed", {1: None, 2: None, 3: None})
    rows = [partial, best, shifted, single, failed]
    compare_to_best(rows)
    assert best["vs_best"] is None and failed["vs_best"] is None
    assert partial["vs_best"]["pairs"] == 2
    assert partial["vs_best"]["delta"] == pytest.approx((0.79 + 0.805) / 2 - (0.80 + 0.81) / 2)
    assert partial["vs_best"]["p"] == pytest.approx(ttest_rel([0.79, 0.805], [0.80, 0.81]).pvalue)
    assert shifted["vs_best"]["delta"] == pytest.approx(-0.01) and shifted["vs_best"]["pairs"] == 3
    assert math.isnan(shifted["vs_best"]["p"])
    assert single["vs_best"]["pairs"] == 1 and math.isnan(single["vs_best"]["p"])
    assert _vs_best(single) == "-0.1000 (p n/a, 1 seed)" and _vs_best(best) == "–"


def test_a_failing_variant_is_reported_while_the_others_complete(tmp_path):
    spec = tiny_spec({"lr": {}, "bad-key": {"model": "fm", "set": {"model.no_such_key": 3}},
                      "diverges": {"model": "fm", "set": {"train.lr": 1e30}}}, seeds=[1])
    result = run_bench(spec, tmp_path, console=QUIET)
    status = {r["variant"]: r["status"] for r in result.records}
    assert status == {"lr": "done", "bad-key": "failed", "diverges": "failed"}
    errors = {r["variant"]: r["error"] for r in result.failed}
    assert "no_such_key" in errors["bad-key"] and "loss became" in errors["diverges"]
    report = (tmp_path / "report.md").read_text()
    assert "| bad-key | fm | 0/1 FAILED: unknown key 'model.no_such_key'" in report
    assert "## Failed runs" in report and "diverges / seed 1: training loss became" in report
    assert json.loads((tmp_path / "runs/synthetic/bad-key/seed-1/error.json").read_text())["stage"] == "config"
    assert (tmp_path / "runs/synthetic/lr/seed-1/metrics.json").is_file()


def test_a_setting_that_no_run_accepts_stops_the_bench_before_it_runs(tmp_path):
    """--set train.epochs=abc failed every run at its config stage, one after the other, each leaving an error.json."""
    calls = CountingTrain()
    with pytest.raises(BenchError, match=r"no run of this bench has a valid config, nothing was run; first: "
                                         r"synthetic / lr: .*train.epochs"):
        run_bench(tiny_spec(["lr", "fm"], seeds=[1]), tmp_path, console=QUIET, cli_sets={"train.epochs": "abc"},
                  train_fn=calls)
    assert calls.calls == [] and not (tmp_path / "runs").exists()
    res = CliRunner().invoke(app, ["bench", "--models", "lr", "--set", "train.epochs=abc", "--out",
                                   str(tmp_path / "cli")])
    assert res.exit_code == 2 and "no run of this bench has a valid config" in res.output, res.output


def test_a_dataset_whose_runs_all_fail_and_an_undefined_auc_still_give_the_report_and_chart(tmp_path):
    """The chart's axis limits came from min() of the panel's AUCs: a dataset where every run failed (or whose
    test AUC is NaN, a test split with one class) raised ValueError after the whole bench had run."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "feature_map.json").write_text("{}")  # only checked to exist: its runs fail in train_fn below

    def train_fn(cfg, out=None, resume=None, console=None):
        if cfg.data.path:
            raise RuntimeError("boom")
        metrics = dlf.train(cfg, out=out, resume=resume, console=console)
        if cfg.model_name == "fm":  # as dlf.train gives it: NaN in the dict, null in metrics.json (6a2ce9e)
            metrics["test"]["auc"] = float("nan")
            saved = json.loads((out / "metrics.json").read_text())
            saved["test"]["auc"] = None
            (out / "metrics.json").write_text(json.dumps(saved))
        return metrics

    spec = tiny_spec(["fm", "lr"], seeds=[1], datasets={"synthetic": {}, "other": {"path": str(other)}})
    result = run_bench(spec, tmp_path / "b", console=QUIET, train_fn=train_fn)
    assert [r["status"] for r in result.records] == ["done", "done", "failed", "failed"]
    report = (tmp_path / "b" / "report.md").read_text()
    lr_auc = result.records[1]["metrics"]["test"]["auc"]
    table = report.split("## synthetic")[1].split("## other")[0]
    assert table.index("| 1 | lr |") < table.index("| 2 | fm |")  # NaN is not ranked first
    assert "| 2 | fm | fm | 1/1 | n/a |" in table
    assert f"Best: lr ({lr_auc:.4f})" in table
    assert "| – | fm | fm | 0/1 FAILED: RuntimeError: boom" in report
    assert (tmp_path / "b" / "bench.png").stat().st_size > 1000
    # rerun (resume): the finished fm run's metrics.json holds null, which was a TypeError in the console line
    # and in the mean ('NoneType' and 'float')
    for report_only in (False, True):
        again = run_bench(spec, tmp_path / "b", console=QUIET, train_fn=train_fn, report_only=report_only)
        assert [r["status"] for r in again.records] == ["skipped", "skipped", "failed", "failed"]
        assert (tmp_path / "b" / "report.md").read_text().split("## Settings")[0].split("UTC.")[1] == \
            report.split("## Settings")[0].split("UTC.")[1]


def test_an_interrupted_bench_resumes_without_rerunning_finished_runs(tmp_path):
    spec = tiny_spec(["lr", "fm"], seeds=[1, 2])
    spec.set["train.epochs"] = 2
    first = CountingTrain(interrupt_on_call=2)  # Ctrl-C while the 2nd run trains
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=first)
    assert result.interrupted and len(first.calls) == 2
    assert [r["status"] for r in result.records] == ["done", "pending", "pending", "pending"]
    report = (tmp_path / "report.md").read_text()
    assert "(**interrupted**)" in report and "## Not run yet" in report and "fm / seed 1" in report
    done_metrics = tmp_path / "runs/synthetic/lr/seed-1/metrics.json"
    stamp = done_metrics.stat().st_mtime_ns

    second = CountingTrain()
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=second)
    assert not result.interrupted and not result.failed
    assert [c[:2] for c in second.calls] == [("fm", 1), ("lr", 2), ("fm", 2)]  # lr seed 1 is not run again
    assert done_metrics.stat().st_mtime_ns == stamp
    assert [r["status"] for r in result.records] == ["skipped", "done", "done", "done"]
    assert "4 done, 0 failed, 0 not run yet" in (tmp_path / "report.md").read_text()


class InterruptAtEpoch(Console):
    """A quiet console that raises KeyboardInterrupt when the trainer reports the end of epoch `epoch`."""

    def __init__(self, epoch):
        super().__init__(quiet=True)
        self.epoch = epoch

    def print(self, *args, **kwargs):
        if args and str(args[0]).startswith(f"epoch {self.epoch:>2}"):
            raise KeyboardInterrupt


def test_a_run_killed_mid_training_continues_from_its_checkpoint(tmp_path):
    spec = tiny_spec(["fm"], seeds=[1])
    spec.set["train.epochs"] = 2

    def killed(cfg, out=None, resume=None, console=None):  # epoch 1 checkpointed, killed during epoch 2
        return dlf.train(cfg, out=out, resume=resume, console=InterruptAtEpoch(2))

    result = run_bench(spec, tmp_path, console=QUIET, train_fn=killed)
    run = tmp_path / "runs/synthetic/fm/seed-1"
    assert result.interrupted and not (run / "metrics.json").exists() and any((run / "checkpoints").iterdir())
    resumed = CountingTrain()
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=resumed)
    assert resumed.calls == [("fm", 1, "resume")] and not result.failed
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_a_changed_spec_moves_the_old_run_aside_instead_of_reusing_it(tmp_path):
    spec = tiny_spec(["lr"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    spec.set["train.lr"] = 0.02
    counting = CountingTrain()
    run_bench(spec, tmp_path, console=QUIET, train_fn=counting)
    assert len(counting.calls) == 1
    assert (tmp_path / "runs/synthetic/lr/seed-1.stale-1/metrics.json").is_file()
    cfg = yaml.safe_load((tmp_path / "runs/synthetic/lr/seed-1/config.yaml").read_text())
    assert cfg["train"]["lr"] == 0.02


def test_search_gives_every_model_the_same_budget_and_selects_on_validation(tmp_path):
    spec = tiny_spec(["lr", "fm"], seeds=[1, 2],
                     search={"grid": {"train.lr": [0.05, 0.0001], "train.batch_size": [128, 256]}, "trials": 3})
    counting = CountingTrain()
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=counting)
    assert not result.failed
    trials = [r for r in result.records if r["kind"] == "trial"]
    assert sorted((r["variant"], r["trial"]) for r in trials) == [("fm", 1), ("fm", 2), ("fm", 3),
                                                                  ("lr", 1), ("lr", 2), ("lr", 3)]
    assert [r["trial_params"] for r in trials if r["variant"] == "lr"] == \
        [r["trial_params"] for r in trials if r["variant"] == "fm"]  # the same draw from the grid
    for variant in ("lr", "fm"):
        mine = [r for r in trials if r["variant"] == variant]
        best = max(mine, key=lambda r: r["val_score"])
        assert result.selections[("synthetic", variant)]["params"] == best["trial_params"]
        cfg = yaml.safe_load((tmp_path / f"runs/synthetic/{variant}/seed-2/config.yaml").read_text())
        assert cfg["train"]["lr"] == best["trial_params"]["train.lr"]
    # 6 trials + the seed-2 runs; the seed-1 runs reuse the chosen trial (same config and seed)
    assert len(counting.calls) == 8
    assert "## Hyper-parameter search" in (tmp_path / "report.md").read_text()


def test_dataset_model_keys_apply_only_to_models_that_have_them():
    spec = spec_from_dict({"models": ["lr", "dnn"], "datasets": {"synthetic": {"set": {"model.batch_norm": True}}}})
    (ds,) = spec.datasets
    by_name = {v.name: v for v in spec.models}
    over, skipped = run_overrides(spec, ds, by_name["dnn"], seed=1)
    assert over["model.batch_norm"] is True and not skipped
    over, skipped = run_overrides(spec, ds, by_name["lr"], seed=1)
    assert "model.batch_norm" not in over and skipped == ["model.batch_norm"]
    build_config(None, over)  # LR's config accepts what is left


def test_a_dataset_given_by_path_keeps_its_name_and_overrides_from_the_file(tmp_path):
    data = tmp_path / "data" / "crit"
    data.mkdir(parents=True)
    (data / "feature_map.json").write_text("{}")
    spec_file = tmp_path / "bench.yaml"
    spec_file.write_text(yaml.safe_dump({"models": ["lr"], "datasets": {
        "criteo-small": {"path": str(data), "set": {"train.batch_size": 256}}}}))
    for given in ("criteo-small", str(data), str(tmp_path / "data" / ".." / "data" / "crit")):
        (ds,) = load_spec(spec_file, datasets=given).datasets
        assert (ds.name, ds.set) == ("criteo-small", {"train.batch_size": 256}), given
    other = tmp_path / "other"
    other.mkdir()
    (other / "feature_map.json").write_text("{}")
    (ds,) = load_spec(spec_file, datasets=str(other)).datasets
    assert (ds.name, ds.set) == ("other", {})
    # the file's dataset of the folder's name, found at another path: its settings kept (they were dropped)
    moved = tmp_path / "elsewhere" / "criteo-small"
    moved.mkdir(parents=True)
    (moved / "feature_map.json").write_text("{}")
    (ds,) = load_spec(spec_file, datasets=str(moved)).datasets
    assert (ds.name, ds.path, ds.set) == ("criteo-small", str(moved), {"train.batch_size": 256})


def test_a_finished_run_on_a_dataset_given_by_relative_path_is_not_rerun(tmp_path, monkeypatch):
    """dlf.train stores data.path absolute; the plan held it as given (relative): every rerun of the bench found
    'the planned config differs', moved each finished run aside to seed-S.stale-N and trained it again."""
    from dlf.data.preprocess import preprocess
    from dlf.serve.demo import write_demo_csv, write_demo_schema

    monkeypatch.chdir(tmp_path)
    preprocess("generic", [write_demo_csv(tmp_path / "demo.csv", 600)], tmp_path / "data" / "demo",
               schema=write_demo_schema(tmp_path / "schema.yaml"))
    spec = spec_from_dict({"models": ["lr"], "seeds": [1], "datasets": ["data/demo"],
                           "set": {"train.epochs": 1, "train.batch_size": 128, "train.threads": 1}})
    first = run_bench(spec, "b", console=QUIET)
    assert [r["status"] for r in first.records] == ["done"]
    again = CountingTrain()
    result = run_bench(spec, "b", console=QUIET, train_fn=again)
    assert again.calls == [] and [r["status"] for r in result.records] == ["skipped"]
    assert sorted(p.name for p in (tmp_path / "b/runs/demo/lr").iterdir()) == ["seed-1"]
    # ~ in a YAML spec is the home folder (it was no processed dataset: './~/data/demo'), and reruns skip too
    monkeypatch.setenv("HOME", str(tmp_path))
    home = spec_from_dict({**spec.to_dict(), "datasets": {"demo": {"path": "~/data/demo"}}})
    result = run_bench(home, "b", console=QUIET, train_fn=again)
    assert again.calls == [] and [r["status"] for r in result.records] == ["skipped"]


def test_search_points_skip_keys_a_model_does_not_have():
    spec = load_spec(None, models="lr", grid=["model.embedding_dim=4,8", "train.lr=0.1,0.01"], trials=0)
    points, skipped = search_points(spec.search, "lr")
    assert points == [{"train.lr": 0.1}, {"train.lr": 0.01}] and skipped == ["model.embedding_dim"]
    points, skipped = search_points(spec.search, "fm")
    assert len(points) == 4 and not skipped


def test_spec_errors_are_caught_before_anything_runs(tmp_path):
    with pytest.raises(BenchError, match="unknown model 'nope'"):
        spec_from_dict({"models": ["nope"]})
    with pytest.raises(BenchError, match="not a processed dataset"):
        spec_from_dict({"models": ["lr"], "datasets": [str(tmp_path)]})
    with pytest.raises(BenchError, match="unknown key"):
        spec_from_dict({"models": ["lr"], "sedes": [1]})
    with pytest.raises(BenchError, match="distinct integers"):
        load_spec(None, models="lr", seeds="1,1")


def test_shipped_bench_files_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "bench"
    ablations = load_spec(root / "ablations.yaml")
    names = [v.name for v in ablations.models]
    for name in ("dlf", "dlf-no-alpha", "dlf-concat", "dlf-no-gate", "dlf-no-beta", "dlf-no-gamma", "dlf-L1",
                 "dlf-L6", "dlf-r4", "dlf-r24"):
        assert name in names
    for base in (None, root.parent / "demo.yaml"):  # valid configs on their own and on the demo base
        for v in ablations.models:
            build_config(base, run_overrides(ablations, ablations.datasets[0], v, 1)[0])
    from dlf.models import available_models
    for name in ("zoo.yaml", "zoo-small.yaml"):
        zoo = load_spec(root / name)
        assert {v.model for v in zoo.models} == set(available_models())
        for v in zoo.models:  # every variant's overrides (and the common ones that apply) make a valid config
            build_config(None, run_overrides(zoo, zoo.datasets[0], v, 1)[0])


def test_cli_bench_exit_codes_and_flags(tmp_path):
    runner = CliRunner()
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    spec = tmp_path / "bench.yaml"
    spec.write_text(yaml.safe_dump({"models": {"lr": {}, "broken": {"model": "lr", "set": {"model.depth": 2}}},
                                    "seeds": [3]}))
    res = runner.invoke(app, ["bench", str(spec), "--out", str(tmp_path / "b"), *sets])
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.output and "1 run(s) failed" in res.output
    res = runner.invoke(app, ["bench", "--out", str(tmp_path / "b"), "--models", "lr", "--seeds", "3", *sets])
    assert res.exit_code == 0 and "done before, skipped" in res.output
    res = runner.invoke(app, ["bench", "--models", "lr,nope", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "unknown model 'nope'" in res.output


def test_cli_base_config_sits_under_the_variants(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"name": "fm", "embedding_dim": 3},
                                    "data": {"synthetic": {k.split(".")[-1]: v for k, v in TINY.items()
                                                           if k.startswith("data.")}},
                                    "train": {"epochs": 1, "batch_size": 256, "threads": 1}}))
    spec = tmp_path / "bench.yaml"
    spec.write_text(yaml.safe_dump({"models": {"fm": {}, "fm-wide": {"model": "fm", "set": {"model.embedding_dim": 5}},
                                               "lr": {}}, "seeds": [1]}))  # LR has no embedding_dim: dropped
    res = CliRunner().invoke(app, ["bench", str(spec), "--config", str(base), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    dims = {v: yaml.safe_load((tmp_path / f"b/runs/synthetic/{v}/seed-1/config.yaml").read_text())["model"]
            ["embedding_dim"] for v in ("fm", "fm-wide")}
    assert dims == {"fm": 3, "fm-wide": 5}
    res = CliRunner().invoke(app, ["bench", str(spec), "--config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_cli_bench_into_a_path_that_cannot_be_a_folder_is_one_line(tmp_path):
    """--out below a file was a NotADirectoryError traceback."""
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(app, ["bench", "--models", "lr", "--out", str(tmp_path / "file" / "b")])
    assert res.exit_code == 2 and "cannot write the bench folder: Not a directory" in res.output, res.output


@pytest.mark.parametrize("where", ["cli", "set", "dataset", "grid", "base"])
def test_a_common_model_key_that_no_model_has_is_an_error_not_a_skip(tmp_path, where):
    """A typo such as --set model.alpah=false was skipped for every model as 'a key this model lacks' (only listed at
    the end of report.md): the ablation silently trained the full model. Only keys some registered model has are
    skipped where absent."""
    calls = CountingTrain()
    typo = {"model.alpah": False}
    spec = tiny_spec(["dlf", "lr"], seeds=[1], **({"datasets": {"synthetic": {"set": typo}}} if where == "dataset"
                                                  else {"search": {"grid": {"model.alpah": [False]}}} if where == "grid"
                                                  else {}))
    if where == "set":
        spec.set.update(typo)
    if where == "base":
        spec.config = str(tmp_path / "base.yaml")
        (tmp_path / "base.yaml").write_text("model: {alpah: false}\n")
    with pytest.raises(BenchError, match="unknown key 'model.alpah'"):
        run_bench(spec, tmp_path / "b", console=QUIET, cli_sets=typo if where == "cli" else None, train_fn=calls)
    assert calls.calls == []
    # a key DLF has stays skipped for LR (and is applied to DLF)
    over, skipped = run_overrides(spec, spec.datasets[0], spec.models[1], 1, {"model.alpha": False})
    assert "model.alpha" not in over and "model.alpha" in skipped


@pytest.mark.parametrize("raw, message", [
    ({"seeds": [1.5, 2]}, r"seeds: expected a list of integers, got \[1.5, 2\]"),  # was silently seed 1
    ({"seeds": [True]}, r"seeds: expected a list of integers"),
    ({"config": ["base.yaml"]}, r"config: expected the path of a run config file, got \['base.yaml'\]"),
    ({"out": 3}, r"out: expected a folder path, got 3"),
    ({"search": {"grid": {"train.lr": [0.1]}, "sample_seed": "abc"}}, r"search.sample_seed: expected an integer"),
    ({"search": {"grid": {"train.lr": [0.1]}, "trials": True}}, r"search.trials: expected an integer >= 0"),
])
def test_spec_values_of_the_wrong_type_are_one_line_errors(raw, message):
    """A float seed was truncated without a word; a list as config or a number as out or sample_seed was a
    TypeError / ValueError traceback."""
    with pytest.raises(BenchError, match=message):
        spec_from_dict({"models": ["lr"], **raw})


def test_unreadable_bench_and_base_files_are_one_line_errors(tmp_path):
    """A base config (--config) that is not valid YAML or not a mapping was a YAMLError / AttributeError traceback;
    a bench file that is not valid YAML printed PyYAML's multi-line report."""
    (tmp_path / "bad.yaml").write_text("model: [x\ntrain: {}\n")
    (tmp_path / "list.yaml").write_text("- 1\n")
    cases = [(["bench", str(tmp_path / "bad.yaml")], r"bench file '\S*bad.yaml' is not valid YAML: line 2: expected"),
             (["bench", "--models", "lr", "--config", str(tmp_path / "bad.yaml")],
              r"config file '\S*bad.yaml' is not valid YAML: line 2: expected"),
             (["bench", "--models", "lr", "--config", str(tmp_path / "list.yaml")],
              r"config file '\S*list.yaml' must hold a mapping")]
    for args, message in cases:
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--dry-run"])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert re.search(f"^error: .*{message}", res.output), res.output


def test_without_matplotlib_the_bench_says_there_is_no_chart_and_leaves_no_stale_one(tmp_path, monkeypatch):
    """Without matplotlib (or without a finished run) the command still printed 'chart: OUT/bench.png', a file that
    did not exist or was the chart of an earlier state of the bench."""
    spec = tiny_spec(["lr"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    assert (tmp_path / "bench.png").is_file()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = run_bench(spec, tmp_path, console=QUIET, report_only=True)
    assert not (tmp_path / "bench.png").exists() and "matplotlib is not installed" in result.no_chart
    res = CliRunner().invoke(app, ["bench", "--out", str(tmp_path), "--report-only"])
    assert res.exit_code == 0 and "no chart: matplotlib is not installed" in res.output, res.output
    assert "bench.png" not in res.output


def test_a_search_interrupted_before_its_last_trial_selects_nothing_yet(tmp_path):
    """Ctrl-C during trial 2 copied trial 1 (the best of the trials done so far) into the seed-1 run folder as the
    selection: the interrupted report showed it as a finished run, and the rerun, once the search chose another
    trial, moved it aside to seed-1.stale-1."""
    spec = tiny_spec(["lr"], seeds=[1], search={"grid": {"train.lr": [0.05, 0.0001]}})
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=CountingTrain(interrupt_on_call=2))
    assert result.interrupted and [r["status"] for r in result.records] == ["done", "pending", "pending"]
    assert not (tmp_path / "runs/synthetic/lr/seed-1").exists()
    result = run_bench(spec, tmp_path, console=QUIET)
    assert [r["status"] for r in result.records] == ["skipped", "done", "skipped"]
    assert [p.name for p in (tmp_path / "runs/synthetic/lr").iterdir()] == ["seed-1"]


def test_report_only_leaves_the_saved_spec_alone(tmp_path):
    """--report-only rewrote bench.yaml with the spec it was given (e.g. --models lr to look at one model), so the
    next `dlf bench --out DIR` resumed that subset instead of the bench."""
    run_bench(tiny_spec(["lr", "fm"], seeds=[1]), tmp_path, console=QUIET)
    saved = (tmp_path / "bench.yaml").read_text()
    result = run_bench(tiny_spec(["lr"], seeds=[1]), tmp_path, console=QUIET, report_only=True)
    assert [r["status"] for r in result.records] == ["skipped"]
    assert (tmp_path / "bench.yaml").read_text() == saved
    with pytest.raises(BenchError, match="is no bench folder: nothing to report"):
        run_bench(tiny_spec(["lr"], seeds=[1]), tmp_path / "nope", console=QUIET, report_only=True)
    assert not (tmp_path / "nope").exists()


def test_a_dataset_name_is_a_folder_name(tmp_path):
    """A dataset named '..' or 'a/b' in the mapping form put its runs outside OUT/runs/ (OUT/VARIANT/seed-S for
    '..'), where another dataset's or the bench's own files live."""
    (tmp_path / "feature_map.json").write_text("{}")
    for name in ("..", "a/b", ".hidden"):
        with pytest.raises(BenchError, match=f"datasets.{re.escape(name)}: a dataset name is a folder name"):
            spec_from_dict({"models": ["lr"], "datasets": {name: {"path": str(tmp_path)}}})


def test_the_best_auc_and_the_best_logloss_are_marked_as_in_a_paper_table(tmp_path):
    """The table is ranked by AUC and nothing marked the best logloss, often another model's (FM below: lower
    logloss, lower AUC), so rank 1 read as best on both."""
    numbers = {"lr": (0.70, 0.52), "fm": (0.69, 0.50), "dnn": (0.68, 0.53)}

    def train_fn(cfg, out=None, resume=None, console=None):
        auc, logloss = numbers[cfg.model_name]
        return {"test": {"auc": auc, "logloss": logloss}, "parameters": 1, "epochs_run": 1, "best_epoch": 1,
                "train_seconds": 1.0, "history": []}

    run_bench(tiny_spec(list(numbers), seeds=[1]), tmp_path, console=QUIET, train_fn=train_fn)
    table = (tmp_path / "report.md").read_text().split("## synthetic")[1].split("## Settings")[0]
    assert "| 1 | lr | lr | 1/1 | **0.7000** | – | 0.5200 |" in table
    assert "| 2 | fm | fm | 1/1 | 0.6900 | -0.0100 (p n/a, 1 seed) | **0.5000** |" in table
    assert "| 3 | dnn | dnn | 1/1 | 0.6800 | -0.0200 (p n/a, 1 seed) | 0.5300 |" in table
    assert "best of each column in bold" in (tmp_path / "report.md").read_text()


def test_a_mean_over_fewer_seeds_is_not_marked_best(tmp_path):
    """A variant with one of its two seeds failed was ranked, bolded and named 'Best' on its other seed's AUC, above
    variants whose every seed finished: a partial result read as the table's winner."""
    def train_fn(cfg, out=None, resume=None, console=None):
        if cfg.model_name == "fm" and cfg.train.seed == 2:
            raise RuntimeError("diverged")
        auc = {"lr": 0.70, "fm": 0.75}[cfg.model_name]
        return {"test": {"auc": auc, "logloss": 1 - auc}, "parameters": 1, "epochs_run": 1, "best_epoch": 1,
                "train_seconds": 1.0, "history": [], "oracle_test": {"auc": 0.8, "logloss": 0.1}}

    run_bench(tiny_spec(["lr", "fm"], seeds=[1, 2]), tmp_path, console=QUIET, train_fn=train_fn)
    table = (tmp_path / "report.md").read_text().split("## synthetic")[1].split("## Settings")[0]
    assert "| 1 | fm | fm | 1/2 (1 failed, 0 not run) | 0.7500 | +0.0500 (p n/a, 1 seed) | 0.2500 |" in table, table
    assert "| 2 | lr | lr | 2/2 | **0.7000 ± 0.0000** | – | **0.3000 ± 0.0000** |" in table, table
    assert "Best: lr (0.7000), 0.1000 AUC below the oracle." in table, table


def test_a_set_flag_on_a_key_of_the_search_grid_is_refused(tmp_path):
    """--set wins over the search's values: with --set train.lr=0.02 --grid train.lr=0.05,0.001 every trial trained
    at 0.02, and the report still said the search had chosen train.lr=0.05."""
    spec = tiny_spec(["lr"], seeds=[1], search={"grid": {"train.lr": [0.05, 0.001]}})
    calls = CountingTrain()
    with pytest.raises(BenchError, match=r"--set train.lr would replace the search grid's values in every trial"):
        run_bench(spec, tmp_path, console=QUIET, cli_sets={"train.lr": 0.02}, train_fn=calls)
    assert calls.calls == [] and not tmp_path.joinpath("runs").exists()


def test_the_chart_shows_every_error_bar_whole(tmp_path, monkeypatch):
    """The x-axis spanned the means (and the oracle) only: a noisy variant's ± std bar ran off the panel, so the
    chart hid the spread it is drawn to show."""
    from dlf.bench import report

    figures = []
    monkeypatch.setattr(report, "atomic_write_png", lambda fig, path: figures.append(fig))
    rows = [{"dataset": "demo", "variant": v, "model": v, "auc_mean": m, "auc_std": s, "oracle": None, "ok": 3,
             "seeds": 3} for v, m, s in (("lr", 0.742, 0.002), ("fm", 0.741, 0.003), ("dnn", 0.733, 0.028))]
    assert report.plot_chart(rows, tmp_path / "bench.png") is None
    lo, hi = figures[0].axes[0].get_xlim()
    assert lo < 0.733 - 0.028 and hi > 0.733 + 0.028


def test_report_only_does_not_present_runs_of_an_earlier_spec_as_results_of_this_one(tmp_path):
    """After an edit of the spec, --report-only (and the rest of the plan after Ctrl-C) reported the old runs on disk
    as finished runs of the new settings; a rerun would move them aside and train them again."""
    spec = tiny_spec(["lr", "fm"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    spec.models[1].set = {"train.lr": 0.02}  # fm changed, lr not
    result = run_bench(spec, tmp_path, console=QUIET, report_only=True)
    assert [r["status"] for r in result.records] == ["skipped", "pending"]
    assert "1 done, 0 failed, 1 not run yet" in (tmp_path / "report.md").read_text()
    spec.set["train.lr"] = 0.03  # both changed; Ctrl-C during the first run: fm is only read from disk
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=CountingTrain(interrupt_on_call=1))
    assert [r["status"] for r in result.records] == ["pending", "pending"]


def test_dry_run_tells_which_finished_runs_a_changed_spec_will_run_again(tmp_path):
    """--dry-run listed a run of an earlier spec as 'done', though the real run moves it aside and trains it again."""
    spec = tiny_spec(["lr", "fm"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    spec.models[1].set = {"train.lr": 0.02}
    out = io.StringIO()
    run_bench(spec, tmp_path, console=Console(file=out, soft_wrap=True), dry_run=True)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("  synthetic / lr / seed 1: done;"), lines
    assert lines[1].startswith("  synthetic / fm / seed 1: another config on disk (moved aside and run again);"), lines


def test_ctrl_c_while_the_chosen_trial_is_copied_leaves_no_half_copied_run(tmp_path, monkeypatch):
    """The chosen trial was copied file by file straight into the seed-1 run folder: Ctrl-C after metrics.json but
    before model.safetensors left a run that counted as done without its weights, and the KeyboardInterrupt
    escaped as a traceback without a report."""
    from dlf.bench import runner

    spec = tiny_spec(["lr"], seeds=[1], search={"grid": {"train.lr": [0.05, 0.001]}})
    real = shutil.copytree

    def interrupted_copy(src, dst, **kwargs):  # metrics.json arrives, then Ctrl-C
        real(src, dst, ignore=lambda folder, names: [n for n in names if n != "metrics.json"], dirs_exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.shutil, "copytree", interrupted_copy)
    result = run_bench(spec, tmp_path, console=QUIET)
    assert result.interrupted and [r["status"] for r in result.records] == ["done", "done", "pending"]
    assert "(**interrupted**)" in (tmp_path / "report.md").read_text()
    assert list((tmp_path / "runs/synthetic/lr").iterdir()) == []  # nor a hidden half copy (.seed-1.copy)
    monkeypatch.setattr(runner.shutil, "copytree", real)
    result = run_bench(spec, tmp_path, console=QUIET)
    assert [r["status"] for r in result.records] == ["skipped", "skipped", "skipped"]
    assert sorted(p.name for p in (tmp_path / "runs/synthetic/lr").iterdir()) == ["seed-1"]
    assert (tmp_path / "runs/synthetic/lr/seed-1/model.safetensors").is_file()


def test_ctrl_c_while_the_copied_trial_is_renamed_into_place_leaves_no_hidden_copy(tmp_path, monkeypatch):
    """The copy was removed when the copying was interrupted, not when the rename into place was: .seed-1.copy
    stayed beside the runs."""
    from dlf.bench import runner

    def interrupted_publish(tmp, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "publish_dir", interrupted_publish)
    result = run_bench(tiny_spec(["lr"], seeds=[1], search={"grid": {"train.lr": [0.05, 0.001]}}), tmp_path,
                       console=QUIET)
    assert result.interrupted
    assert list((tmp_path / "runs/synthetic/lr").iterdir()) == []


def test_an_undefined_test_auc_reads_the_same_in_results_csv_fresh_or_resumed(tmp_path):
    """results.csv wrote an undefined test AUC as 'nan' when the run had just finished and as '' when the bench was
    resumed or --report-only read it from metrics.json (null): the same run, two spellings across reruns."""
    def train_fn(cfg, out=None, resume=None, console=None):
        metrics = dlf.train(cfg, out=out, resume=resume, console=console)
        metrics["test"]["auc"] = float("nan")  # as dlf.train gives it: NaN in the dict, null in metrics.json
        saved = json.loads((out / "metrics.json").read_text())
        saved["test"]["auc"] = None
        (out / "metrics.json").write_text(json.dumps(saved))
        return metrics

    spec = tiny_spec(["lr"], seeds=[1])
    cells = []
    for report_only in (False, True):
        run_bench(spec, tmp_path, console=QUIET, train_fn=train_fn, report_only=report_only)
        with (tmp_path / "results.csv").open() as f:
            (row,) = csv.DictReader(f)
        cells.append(row["test_auc"])
    assert cells == ["", ""]


def test_report_only_needs_no_dataset_folder(tmp_path):
    """--report-only reads the run folders only, yet refused a bench whose processed data had since been moved or
    deleted ('not a processed dataset'): the report of a finished bench could not be written again."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "feature_map.json").write_text("{}")

    def train_fn(cfg, out=None, resume=None, console=None):
        metrics = {"test": {"auc": 0.7, "logloss": 0.5}, "parameters": 1, "epochs_run": 1, "best_epoch": 1,
                   "train_seconds": 1.0, "history": []}
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    spec = spec_from_dict({"models": ["lr"], "seeds": [1], "datasets": {"d": {"path": str(data)}}})
    run_bench(spec, tmp_path / "b", console=QUIET, train_fn=train_fn)
    shutil.rmtree(data)
    res = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), "--report-only"])
    assert res.exit_code == 0, res.output
    assert "1 runs: 1 done" in (tmp_path / "b" / "report.md").read_text()
    res = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), "--dry-run"])  # a run needs the data
    assert res.exit_code == 2 and "is not a processed dataset" in res.output, res.output


def test_grid_values_may_be_lists_and_a_bad_one_is_one_line():
    """--grid split its values on every comma, so list values (model.hidden_units=[8,8],[16]) could not be given,
    and the pieces ('[8') were a YAML traceback."""
    spec = load_spec(None, models="dnn", grid=["model.hidden_units=[8,8],[16]", "train.lr=0.01,0.001"])
    assert spec.search.grid == {"model.hidden_units": [[8, 8], [16]], "train.lr": [0.01, 0.001]}
    with pytest.raises(BenchError, match=r"^--grid 'train.lr=0.1,\{a': .*line 1"):
        load_spec(None, models="dnn", grid=["train.lr=0.1,{a"])


def test_a_dataset_given_by_path_matches_a_spec_path_written_with_tilde(tmp_path, monkeypatch):
    """--datasets ~/data/crit (expanded by the shell) did not match the spec's `path: ~/data/crit`: the dataset ran
    under the folder's name without the spec's overrides for it (batch size 256 here)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    data = tmp_path / "data" / "crit"
    data.mkdir(parents=True)
    (data / "feature_map.json").write_text("{}")
    spec_file = tmp_path / "bench.yaml"
    spec_file.write_text(yaml.safe_dump({"models": ["lr"], "datasets": {
        "criteo-small": {"path": "~/data/crit", "set": {"train.batch_size": 256}}}}))
    (ds,) = load_spec(spec_file, datasets=str(data)).datasets
    assert (ds.name, ds.set) == ("criteo-small", {"train.batch_size": 256})


@pytest.mark.parametrize("where, key", [("cli", "train.seed"), ("set", "train.seed"), ("variant", "model.name"),
                                        ("dataset", "data.path"), ("grid", "train.seed")])
def test_a_setting_the_bench_itself_decides_is_refused_not_ignored(tmp_path, where, key):
    """--set train.seed=7 was silently replaced by the bench's seeds (and model.name by the variant's model, data.path
    by the dataset's): the runs used seeds 1, 2, ... while report.md listed train.seed=7 under 'every run'."""
    value = {"train.seed": 7, "model.name": "fm", "data.path": "x"}[key]
    spec = tiny_spec(["lr"], seeds=[1], **({"datasets": {"synthetic": {"set": {key: value}}}} if where == "dataset"
                                           else {"search": {"grid": {key: [value]}}} if where == "grid" else {}))
    if where == "set":
        spec.set[key] = value
    if where == "variant":
        spec.models[0].set[key] = value
    calls = CountingTrain()
    with pytest.raises(BenchError, match=f"{re.escape(key)}: set by the bench itself, from its "):
        run_bench(spec, tmp_path, console=QUIET, cli_sets={key: value} if where == "cli" else None, train_fn=calls)
    assert calls.calls == []


def test_settings_read_as_yaml_in_the_report_and_the_dry_run(tmp_path):
    """report.md and --dry-run showed Python's spelling of booleans and null (`model.alpha=False`,
    `model.hidden_units=None`), not the one the spec or --set is written in."""
    spec = tiny_spec({"lr": {}, "dlf-bare": {"model": "dlf", "set": {"model.alpha": False, "model.gate": True}}},
                     seeds=[1], search={"grid": {"model.batch_norm": [True, False], "train.lr": [0.01]}})
    out = io.StringIO()
    run_bench(spec, tmp_path, console=Console(file=out, soft_wrap=True), cli_sets={"model.dropout": None},
              dry_run=True)
    assert "model.alpha=false model.gate=true" in out.getvalue() and "model.dropout=null" in out.getvalue()
    tmp_path.mkdir(exist_ok=True)
    run_bench(spec, tmp_path, console=QUIET, cli_sets={"model.dropout": None}, report_only=True)
    report = (tmp_path / "report.md").read_text()
    assert "- dlf-bare: model `dlf`; `model.alpha=false`, `model.gate=true`" in report
    assert "`model.dropout=null`" in report and "Grid: `model.batch_norm=[true, false]`, `train.lr=[0.01]`" in report
    assert "False" not in report and "True" not in report and "None" not in report


@pytest.mark.parametrize("where", ["variant", "grid"])
def test_data_settings_of_one_variant_or_the_grid_are_refused(tmp_path, where):
    """A variant's `set` (or the search grid) could change the synthetic data: that variant trained on other data than
    the rest of its table, which showed one oracle row, the first variant's data's."""
    noisy = {"data.synthetic.noise": 1.0}
    spec = tiny_spec({"lr": {}, "lr-noisy": {"model": "lr", "set": noisy if where == "variant" else {}}}, seeds=[1],
                     **({"search": {"grid": {"data.synthetic.noise": [0.3, 1.0]}}} if where == "grid" else {}))
    calls = CountingTrain()
    where_text = "models.lr-noisy.set" if where == "variant" else "search.grid"
    with pytest.raises(BenchError, match=f"^{where_text}: data.synthetic.noise: every variant of a dataset trains on "
                                         "the same data; give data settings in the dataset's set"):
        run_bench(spec, tmp_path, console=QUIET, train_fn=calls)
    assert calls.calls == []
    spec = tiny_spec(["lr"], seeds=[1], datasets={"synthetic": {"set": noisy}})  # where data settings belong
    run_bench(spec, tmp_path, console=QUIET, dry_run=True)


def test_two_synthetic_datasets_under_their_own_names_each_get_their_oracle_row(tmp_path):
    """Only a dataset named `synthetic` was the built-in data, so two noise levels needed two benches. A dataset
    with `synthetic: true` is the built-in data under its own name, with its own runs and oracle row."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "models": ["lr"], "seeds": [1], "set": TINY,
        "datasets": {"synthetic": {}, "synthetic-noisy": {"synthetic": True, "set": {"data.synthetic.noise": 2.0}}}}))
    out = tmp_path / "b"
    result = run_bench(load_spec(spec_file), out, console=QUIET)
    assert not result.failed and [r["dataset"] for r in result.records] == ["synthetic", "synthetic-noisy"]
    noise = {ds: yaml.safe_load((out / "runs" / ds / "lr/seed-1/config.yaml").read_text())["data"]
             for ds in ("synthetic", "synthetic-noisy")}
    assert noise["synthetic"]["dataset"] == noise["synthetic-noisy"]["dataset"] == "synthetic"
    assert noise["synthetic"]["synthetic"]["noise"] != noise["synthetic-noisy"]["synthetic"]["noise"] == 2.0
    report = (out / "report.md").read_text()
    oracles = re.findall(r"\| oracle \(true probabilities\) \| \| \| (0\.\d+) \|", report)
    assert len(oracles) == 2 and float(oracles[1]) < float(oracles[0])  # more noise: a lower best possible AUC
    assert "- dataset synthetic-noisy: built-in synthetic data; `data.synthetic.noise=2.0`" in report
    # bench.yaml (what `dlf bench --out DIR` alone resumes) keeps it; --datasets picks it from the spec by name
    assert [(d.name, d.path, d.set) for d in load_spec(out / "bench.yaml").datasets] == [
        ("synthetic", None, {}), ("synthetic-noisy", None, {"data.synthetic.noise": 2.0})]
    assert [d.set for d in load_spec(spec_file, datasets="synthetic-noisy").datasets] == [{"data.synthetic.noise": 2.0}]
    for body, message in [({"path": "data/x", "synthetic": True}, r"datasets.x: synthetic: true is the built-in data, "
                                                                   "which has no path; drop one of synthetic and path"),
                          ({"synthetic": "yes"}, r"datasets.x.synthetic: expected true or false, got 'yes'"),
                          ({"set": {}}, r"datasets.x: needs path \(a folder written by dlf preprocess\), or "
                                        "synthetic: true for the built-in synthetic data")]:
        with pytest.raises(BenchError, match=f"^{message}"):
            spec_from_dict({"models": ["lr"], "datasets": {"x": body}})


def test_sigterm_mid_run_stops_the_bench_as_ctrl_c_does(tmp_path):
    """`kill`, `timeout` or a job scheduler (SIGTERM) ended the bench on the spot: no report.md for the runs that had
    finished, no word on how to resume. It now stops as Ctrl-C does, with exit status 143."""
    out = tmp_path / "b"
    sets = [a for k, v in {**TINY, "train.epochs": 1000, "train.patience": 1000}.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen([sys.executable, "-m", "dlf", "bench", "--models", "lr,fm", "--seeds", "1", "--out",
                             str(out), *sets], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = out / "runs/synthetic/lr/seed-1/checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(checkpoints.glob("*.safetensors"))):  # lr trains, epoch 1 is saved
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    output = proc.stdout.read()
    assert "interrupted during synthetic / lr / seed 1: rerun the same command to resume" in output, output
    report = (out / "report.md").read_text()
    assert "(**interrupted**)" in report and "- synthetic / fm / seed 1" in report
    assert not (out / "runs/synthetic/lr/seed-1/metrics.json").exists()
    assert [p for p in out.rglob(".*")] == []  # no temporary file or folder left


def test_ctrl_c_while_the_report_is_written_is_one_line_and_status_130(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) outside a run, e.g. while the report was written, was click's bare 'Aborted!' and status 1,
    as if the bench had failed."""
    from dlf.bench import report

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", interrupted)
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["bench", "--models", "lr", "--seeds", "1", "--out", str(tmp_path / "b"), *sets])
    assert res.exit_code == 130 and "interrupted: rerun the same command to resume" in res.output, res.output


def test_a_synthetic_dataset_whose_test_split_has_one_class_gets_an_oracle_row_and_a_chart(tmp_path):
    """Its oracle test AUC is undefined: the report printed 'nan' in the oracle row of a fresh bench, and a rerun or
    --report-only, which read it from metrics.json as null, stopped with a TypeError; the chart drew the oracle line
    at NaN / None beside the other dataset's panel."""
    spec = tiny_spec(["lr"], seeds=[1], datasets={
        "synthetic": {}, "rare": {"synthetic": True, "set": {"data.synthetic.rows": 100,
                                                              "data.synthetic.click_rate": 0.01}}})
    spec.set["train.monitor"] = "logloss"
    for report_only in (False, True):
        run_bench(spec, tmp_path, console=QUIET, report_only=report_only)
        rare = (tmp_path / "report.md").read_text().split("## rare")[1].split("## Settings")[0]
        assert "| | oracle (true probabilities) | | | n/a |" in rare and "Best:" not in rare
        assert (tmp_path / "bench.png").stat().st_size > 1000


@pytest.mark.parametrize("flag, message", [("models", "models: give a list"), ("datasets", "datasets: empty"),
                                           ("seeds", "seeds: expected distinct integers")])
def test_an_empty_list_flag_is_an_error_not_the_files_list(flag, message):
    """`--seeds ""` (a shell variable that was not set) ran the file's three seeds without a word."""
    from pathlib import Path

    spec_file = Path(__file__).parents[1] / "configs/bench/zoo-small.yaml"
    with pytest.raises(BenchError, match=message):
        load_spec(spec_file, **{flag: ""})


def test_two_dataset_folders_of_one_name_given_by_flag_are_refused(tmp_path):
    """--datasets a/criteo,b/criteo ran only b/criteo (both were named 'criteo', the last replaced the first) and
    a folder named 'synthetic' replaced the built-in data, without a word."""
    for folder in ("a/crit", "b/crit", "c/synthetic"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "feature_map.json").write_text("{}")
    for given, name in ((f"{tmp_path}/a/crit,{tmp_path}/b/crit", "crit"),
                        (f"synthetic,{tmp_path}/c/synthetic", "synthetic")):
        with pytest.raises(BenchError, match=f"--datasets: .* are both named '{name}'"):
            load_spec(None, models="lr", datasets=given)
    # one folder given twice (spelt two ways) is one dataset
    (ds,) = load_spec(None, models="lr", datasets=f"{tmp_path}/a/crit,{tmp_path}/b/../a/crit").datasets
    assert ds.name == "crit"


def test_the_search_table_names_the_monitor_its_validation_scores_are(tmp_path):
    """The search table gave 'validation score -0.2503' with no word of what it was (AUC - logloss, the default
    monitor; -logloss with train.monitor=logloss): a reader took it for a broken metric."""
    spec = tiny_spec({"lr": {}, "lr-ll": {"model": "lr", "set": {"train.monitor": "logloss"}}}, seeds=[1],
                     search={"grid": {"train.lr": [0.05, 0.01]}})
    result = run_bench(spec, tmp_path, console=QUIET)
    assert not result.failed
    report = (tmp_path / "report.md").read_text()
    assert "auc-logloss = AUC − logloss, logloss = −logloss" in report
    for variant, monitor in (("lr", "auc-logloss"), ("lr-ll", "logloss")):
        sel = result.selections[("synthetic", variant)]
        assert sel["monitor"] == monitor
        assert f"| {sel['score']:.4f} ({monitor}) |" in report


@pytest.mark.parametrize("where", ["file", "flag"])
def test_a_search_grid_over_the_monitor_is_refused(where):
    """--grid train.monitor=auc,logloss ranked trials of two monitors against each other (AUC ~0.7 against
    -logloss ~-0.5): the 'auc' trial won every time, whatever the models did."""
    with pytest.raises(BenchError, match="search.grid: train.monitor: the trials are ranked on the monitor"):
        if where == "file":
            spec_from_dict({"models": ["lr"], "search": {"grid": {"train": {"monitor": ["auc", "logloss"]}}}})
        else:
            load_spec(None, models="lr", grid=["train.monitor=auc,logloss"])


def test_the_report_tells_set_flags_from_the_files_set_as_they_rank_apart(tmp_path):
    """--set model.embedding_dim=4 was listed with the file's `set` under 'every run' while a variant's line below
    said model.embedding_dim=8: the report read as if the variant had 8 (a variant's set wins over `set`), yet it
    ran with 4 (--set wins over a variant's set)."""
    spec = tiny_spec({"fm": {"set": {"model.embedding_dim": 8}}}, seeds=[1])
    spec.set.pop("model.embedding_dim")
    result = run_bench(spec, tmp_path, console=QUIET, cli_sets={"model.embedding_dim": 4})
    assert not result.failed
    cfg = yaml.safe_load((tmp_path / "runs/synthetic/fm/seed-1/config.yaml").read_text())
    assert cfg["model"]["embedding_dim"] == 4
    settings = (tmp_path / "report.md").read_text().split("## Settings")[1]
    every_run = next(line for line in settings.splitlines() if line.startswith("- every run:"))
    assert "embedding_dim" not in every_run
    assert ("- every run, over the dataset and variant settings below (`--set`): `model.embedding_dim=4`"
            in settings)


def test_results_csv_says_done_for_a_finished_run_in_a_resumed_or_report_only_bench(tmp_path):
    """A rerun (resume) or --report-only wrote status 'skipped' for every finished run in results.csv (what that
    invocation did, not the run's state): filtering the table on status == done gave no row at all."""
    spec = tiny_spec(["lr"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    for report_only in (False, True):
        result = run_bench(spec, tmp_path, console=QUIET, report_only=report_only)
        assert [r["status"] for r in result.records] == ["skipped"]  # (the console's 'done before, skipped')
        rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
        assert [(r["status"], bool(r["test_auc"])) for r in rows] == [("done", True)]


@pytest.mark.parametrize("trials, grid, text", [(5, [0.05, 0.01], "the whole grid (2 points) per model"),
                                                (0, [0.05, 0.01], "the whole grid (2 points)"),
                                                (1, [0.05, 0.01], "1 of its 2 points per model"),
                                                (0, [0.05], "the whole grid (1 point) per model")])
def test_the_search_text_gives_the_trials_that_ran(tmp_path, trials, grid, text):
    """--trials 5 on a grid of 2 points ran 2 trials per model, but the report said '5 trial(s) per model'."""
    spec = tiny_spec(["lr"], seeds=[1], search={"grid": {"train.lr": grid}, "trials": trials})
    result = run_bench(spec, tmp_path, console=QUIET)
    assert not result.failed
    assert text in (tmp_path / "report.md").read_text()


def test_a_synthetic_data_setting_does_not_rerun_the_runs_on_a_processed_dataset(tmp_path):
    """--set data.synthetic.rows=N (to grow the synthetic dataset of a bench) moved every finished run on the
    processed datasets aside and trained it again, though they do not read data.synthetic."""
    from dlf.data.preprocess import preprocess
    from dlf.serve.demo import write_demo_csv, write_demo_schema

    preprocess("generic", [write_demo_csv(tmp_path / "demo.csv", 600)], tmp_path / "demo",
               schema=write_demo_schema(tmp_path / "schema.yaml"))
    spec = spec_from_dict({"models": ["lr"], "seeds": [1], "datasets": ["synthetic", str(tmp_path / "demo")],
                           "set": dict(TINY)})
    assert not run_bench(spec, tmp_path / "b", console=QUIET).failed
    again = CountingTrain()
    result = run_bench(spec, tmp_path / "b", console=QUIET, train_fn=again,
                       cli_sets={"data.synthetic.rows": 1000})
    assert again.calls == [("lr", 1, "fresh")]  # the synthetic run only
    assert [(r["dataset"], r["status"]) for r in result.records] == [("synthetic", "done"), ("demo", "skipped")]
    assert sorted(p.name for p in (tmp_path / "b/runs/demo/lr").iterdir()) == ["seed-1"]


def test_a_grid_value_no_variant_accepts_stops_the_bench_before_it_runs(tmp_path):
    """--grid train.lr=0.01,abc ran the 0.01 trials, failed the 'abc' trial of every model one by one, and selected
    among fewer trials than asked for; a value that only some variants refuse still runs."""
    spec = tiny_spec(["lr", "fm"], seeds=[1], search={"grid": {"train.lr": [0.01, "abc"]}})
    counting = CountingTrain()
    with pytest.raises(BenchError, match="search.grid: train.lr=abc: no variant accepts it, nothing was run; "
                                         "first: lr: train.lr: expected a number"):
        run_bench(spec, tmp_path, console=QUIET, train_fn=counting)
    assert counting.calls == []
    # refused by a variant whose own set is wrong only: that variant's runs fail, the bench runs
    spec = tiny_spec({"lr": {}, "broken": {"model": "lr", "set": {"train.epochs": "x"}}}, seeds=[1],
                     search={"grid": {"train.lr": [0.01, 0.02], "model.layers": [1]}})  # (LR has no layers: skipped)
    run_bench(spec, tmp_path / "dry", console=QUIET, dry_run=True)


def test_the_chart_says_when_a_bar_is_the_mean_of_fewer_seeds(tmp_path, monkeypatch):
    """A variant with one of its three seeds failed had a bar like the others (the table says 2/3 seeds ok, the
    chart said nothing): a mean over fewer seeds, possibly without its worst one, looked like a full result."""
    from dlf.bench import report

    figures = []
    monkeypatch.setattr(report, "atomic_write_png", lambda fig, path: figures.append(fig))
    rows = [{"dataset": "demo", "variant": v, "model": v, "auc_mean": m, "auc_std": 0.001, "oracle": None, "ok": ok,
             "seeds": 3} for v, m, ok in (("lr", 0.74, 3), ("fm", 0.75, 2), ("dnn", None, 0))]
    assert report.plot_chart(rows, tmp_path / "bench.png") is None
    labels = [t.get_text() for t in figures[0].axes[0].get_yticklabels()]
    assert labels == ["dnn (failed)", "lr", "fm (2/3 seeds)"]


def test_out_of_a_bench_with_models_keeps_the_saved_spec(tmp_path):
    """dlf bench --out DIR --models lr (to rerun or report a part of a finished bench) built a spec from the flags
    alone, without the saved bench's settings: every finished lr run was 'another config', to be moved aside and
    trained again with the defaults (1M synthetic rows, 10 epochs)."""
    runner = CliRunner()
    spec = tmp_path / "bench.yaml"
    spec.write_text(yaml.safe_dump({"models": {"lr": {}, "lr-fast": {"model": "lr", "set": {"train.lr": 0.05}}},
                                    "seeds": [1], "set": dict(TINY)}))
    res = runner.invoke(app, ["bench", str(spec), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["bench", "--out", str(tmp_path / "b"), "--models", "lr-fast,lr", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "lr-fast / seed 1: done;" in res.output and "synthetic / lr / seed 1: done;" in res.output


def test_dry_run_of_a_search_bench_plans_the_seed_runs_with_the_choice(tmp_path):
    """--dry-run of a finished search bench said of every seed run 'another config on disk (moved aside and run
    again)': it planned them without the chosen trial's values, which a real rerun selects again (and skips)."""
    spec = tiny_spec(["lr", "fm"], seeds=[1, 2], search={"grid": {"train.lr": [0.05, 0.01]}})
    assert not run_bench(spec, tmp_path, console=QUIET).failed
    console = Console(record=True, width=300)
    run_bench(spec, tmp_path, console=console, dry_run=True)
    states = re.findall(r"/ (\w+) / (seed \d|trial \d): ([^;\n]+)", console.export_text())
    assert len(states) == 8 and {s for _, _, s in states} == {"done"}, states
    # a search not finished: its seed runs wait for its choice
    shutil.rmtree(tmp_path / "search/synthetic/fm/trial-2")
    console = Console(record=True, width=300)
    run_bench(spec, tmp_path, console=console, dry_run=True)
    states = {(v, what): s for v, what, s in re.findall(r"/ (\w+) / (seed \d|trial \d): ([^;\n]+)",
                                                         console.export_text())}
    assert states[("fm", "trial 2")] == "new" and states[("lr", "seed 2")] == "done"
    assert states[("fm", "seed 1")] == states[("fm", "seed 2")] == \
        "after the search (with the settings of the trial it chooses)"


def test_a_finished_run_whose_metrics_cannot_be_read_is_one_line(tmp_path):
    """A metrics.json cut short (an interrupted copy of a bench folder) stopped the bench, its --dry-run and
    --report-only with a JSONDecodeError traceback."""
    spec = tiny_spec(["lr"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    metrics = tmp_path / "runs/synthetic/lr/seed-1/metrics.json"
    metrics.write_text(metrics.read_text()[:50])
    for mode in ({}, {"dry_run": True}, {"report_only": True}):
        with pytest.raises(BenchError, match=f"{re.escape(str(metrics))}: not readable .*; delete its run folder"):
            run_bench(spec, tmp_path, console=QUIET, **mode)


def test_a_run_whose_config_cannot_be_read_is_one_line(tmp_path):
    """A run folder's config.yaml cut short stopped the bench and its --dry-run with a YAML ParserError traceback."""
    spec = tiny_spec(["lr"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    config = tmp_path / "runs/synthetic/lr/seed-1/config.yaml"
    config.write_text("model:\n  name: [lr\n")
    for mode in ({}, {"dry_run": True}):
        with pytest.raises(BenchError, match=f"{re.escape(str(config))}: not readable \\(line 3: .*\\); delete its"):
            run_bench(spec, tmp_path, console=QUIET, **mode)


def test_a_cut_environment_file_does_not_stop_the_report(tmp_path):
    """An environment.json cut short made --report-only (and the end of every bench) stop with a JSONDecodeError
    traceback; the report's environment line now comes from the next run's."""
    spec = tiny_spec(["lr", "fm"], seeds=[1])
    run_bench(spec, tmp_path, console=QUIET)
    (tmp_path / "runs/synthetic/lr/seed-1/environment.json").write_text('{"torch": ')
    run_bench(spec, tmp_path, console=QUIET, report_only=True)
    assert "Environment: torch " in (tmp_path / "report.md").read_text()


def test_bench_lines_show_names_paths_and_errors_verbatim(tmp_path):
    """The console lines went through rich markup: a dataset named 'd[b]' was shown as 'd', and an --out path or an
    error quoting '[/i]' (a user's value) raised MarkupError: after the whole bench had run, for the report line."""
    weird = tmp_path / "x[" / "i]"  # the path holds '[/i]'
    weird.mkdir(parents=True)
    (weird / "feature_map.json").write_text("{}")  # only checked to exist: its run fails in train_fn below

    def train_fn(cfg, out=None, resume=None, console=None):
        raise RuntimeError("bad value '[/i]' in [b]field")

    spec = tiny_spec(["lr"], seeds=[1], datasets={"d[b]": {"path": str(weird)}})
    shown = io.StringIO()
    result = run_bench(spec, tmp_path / "b", console=Console(file=shown, soft_wrap=True), train_fn=train_fn)
    assert [r["status"] for r in result.records] == ["failed"]
    assert "[1/1] d[b] / lr / seed 1: FAILED RuntimeError: bad value '[/i]' in [b]field" in shown.getvalue(), \
        shown.getvalue()

    out = tmp_path / "o[" / "i]b[b]"
    sets = [x for k, v in {**TINY, "data.synthetic.rows": 600}.items() for x in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["bench", "--models", "lr", "--seeds", "1", *sets, "--out", str(out)])
    assert res.exit_code == 0 and f"report: {out / 'report.md'}" in res.output, res.output


def test_a_search_whose_trials_all_failed_says_so_in_its_seed_runs(tmp_path):
    """The seed runs' error read 'RuntimeError: hyper-parameter search: ...', as if the bench had crashed."""
    def train_fn(cfg, out=None, resume=None, console=None):
        raise RuntimeError("boom")

    spec = tiny_spec(["lr"], seeds=[1], search={"grid": {"train.lr": [0.01, 0.02]}})
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=train_fn)
    assert [(r["kind"], r["status"], r["error"]) for r in result.records if r["kind"] == "run"] == [
        ("run", "failed", "hyper-parameter search: every trial failed, nothing to select")]
    assert json.loads((tmp_path / "runs/synthetic/lr/seed-1/error.json").read_text())["stage"] == "search"
    assert "| synthetic | lr | 0/2 | none (every trial failed) |" in (tmp_path / "report.md").read_text()


def test_a_search_stopped_before_its_trials_ran_is_not_reported_as_failed(tmp_path):
    """Ctrl-C before a variant's trials ran: the report's search table said 'none (every trial failed)' for it."""
    spec = tiny_spec(["lr"], seeds=[1], search={"grid": {"train.lr": [0.01, 0.02]}})
    result = run_bench(spec, tmp_path, console=QUIET, train_fn=CountingTrain(interrupt_on_call=1))
    assert result.interrupted
    report = (tmp_path / "report.md").read_text()
    assert "| synthetic | lr | 0/2 | none yet (2 trial(s) not run) |" in report
    assert "every trial failed" not in report


def test_a_bench_on_a_relative_dataset_path_reports_from_another_folder(tmp_path, monkeypatch):
    """bench.yaml kept `path: data/d` as given: `dlf bench --out DIR --report-only` run from another folder read it
    as another (missing) dataset and rewrote the report with every finished run on it as not run yet."""
    def train_fn(cfg, out=None, resume=None, console=None):  # what dlf.train leaves: config (path absolute), metrics
        config = cfg.to_dict()
        config["data"]["path"] = str(Path(config["data"]["path"]).resolve())
        metrics = {"test": {"auc": 0.7, "logloss": 0.5}, "parameters": 1, "epochs_run": 1, "best_epoch": 1,
                   "train_seconds": 1.0, "history": []}
        Path(out).mkdir(parents=True)
        (Path(out) / "config.yaml").write_text(yaml.safe_dump(config))
        (Path(out) / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.chdir(tmp_path)
    spec = spec_from_dict({"models": ["lr"], "seeds": [1], "datasets": ["data/d"], "set": {"train.epochs": 1}},
                          check_data=False)
    assert [r["status"] for r in run_bench(spec, "b", console=QUIET, train_fn=train_fn).records] == ["done"]
    monkeypatch.chdir(tmp_path / "b")
    saved = load_spec(tmp_path / "b/bench.yaml", check_data=False)
    result = run_bench(saved, tmp_path / "b", console=QUIET, report_only=True)
    assert [r["status"] for r in result.records] == ["skipped"]
