"""The bench report: report.md (mean ± std over seeds per dataset and variant, failures, search
selections), results.csv (one row per run and trial), summary.json and bench.png."""
from __future__ import annotations

import csv
import io
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

from dlf._io import atomic_write_json, atomic_write_png, atomic_write_text

RUN_COLUMNS = ["kind", "dataset", "variant", "model", "seed", "trial", "status", "test_auc", "test_logloss",
               "val_score", "parameters", "epochs_run", "best_epoch", "train_seconds", "samples_per_s",
               "trial_params", "error", "run_dir"]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None with fewer than 2 values)."""
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def metric(value) -> float:
    """A test metric as a number: metrics.json holds null for an undefined one (the AUC of a one-class test split),
    the dict dlf.train returns NaN; both are NaN here (a mean over seeds with one is NaN, shown as such)."""
    return float("nan") if value is None else float(value)


def show(value) -> str:
    return "n/a" if not _finite(metric(value)) else f"{value:.4f}"


def train_samples_per_s(metrics: dict) -> float | None:
    """Mean training throughput over the epochs (the epoch-end evaluations' samples/s)."""
    rates = [r["samples_per_s"] for r in metrics.get("history", []) if r.get("epoch_end") and r.get("samples_per_s")]
    return sum(rates) / len(rates) if rates else None


def summarize(records: list[dict]) -> list[dict]:
    """One row per (dataset, variant) over the seed runs (trials excluded), in plan order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r["kind"] == "run":
            groups.setdefault((r["dataset"], r["variant"]), []).append(r)
    rows = []
    for (dataset, variant), runs in groups.items():
        ok = [r for r in runs if r["metrics"] is not None]
        ms = [r["metrics"] for r in ok]
        auc = mean_std([metric(m["test"]["auc"]) for m in ms])
        logloss = mean_std([metric(m["test"]["logloss"]) for m in ms])
        rates = [x for x in (train_samples_per_s(m) for m in ms) if x is not None]
        rows.append({
            "dataset": dataset, "variant": variant, "model": runs[0]["model"], "seeds": len(runs), "ok": len(ok),
            "auc_by_seed": {r["seed"]: metric(r["metrics"]["test"]["auc"]) for r in ok},
            "failed": sum(r["status"] == "failed" for r in runs),
            "pending": sum(r["status"] in ("pending", "planned") for r in runs),
            "auc_mean": auc[0], "auc_std": auc[1], "logloss_mean": logloss[0], "logloss_std": logloss[1],
            "parameters": ms[0]["parameters"] if ms else None,
            "epochs": mean_std([m["epochs_run"] for m in ms])[0],
            "best_epoch": mean_std([m["best_epoch"] for m in ms])[0],
            "train_seconds": mean_std([m["train_seconds"] for m in ms])[0],
            "samples_per_s": mean_std(rates)[0],
            "errors": sorted({r["error"] for r in runs if r["status"] == "failed" and r["error"]}),
            "trial_params": runs[0].get("trial_params") or {},
            "oracle": next((m["oracle_test"] for m in ms if "oracle_test" in m), None),
        })
    return rows


def ranked(rows: list[dict]) -> tuple[list[dict], dict | None]:
    """One dataset's rows with a mean AUC, best first (NaN, an AUC undefined on a one-class test split, after every
    number), and the best row: the first whose every seed finished when there is one (a mean over some of the seeds
    is no result to mark best while a full one exists)."""
    good = sorted((r for r in rows if r["auc_mean"] is not None),
                  key=lambda r: (not _finite(r["auc_mean"]), -r["auc_mean"] if _finite(r["auc_mean"]) else 0))
    full = [r for r in good if r["ok"] == r["seeds"]] or good
    return good, next((r for r in full if _finite(r["auc_mean"])), None)


def compare_to_best(rows: list[dict]) -> None:
    """Adds to each row its test AUC against its dataset's best variant: `vs_best` {variant, delta (mean AUC
    difference over the seeds both finished), p (two-sided paired t-test over those seeds: a seed fixes the
    initialisation and the batch order of every variant, so runs pair by seed; NaN with fewer than 2 pairs or
    differences without spread), pairs}; None for the best itself and rows without a finished run."""
    from scipy.stats import ttest_rel

    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ds_rows = [r for r in rows if r["dataset"] == dataset]
        _, best = ranked(ds_rows)
        for r in ds_rows:
            r["vs_best"] = None
            if best is None or r is best:
                continue
            seeds = [s for s in best["auc_by_seed"] if _finite(best["auc_by_seed"][s])
                     and _finite(r["auc_by_seed"].get(s))]
            if not seeds:
                continue
            ours, theirs = [r["auc_by_seed"][s] for s in seeds], [best["auc_by_seed"][s] for s in seeds]
            diffs = [a - b for a, b in zip(ours, theirs)]
            p = float("nan")
            if len(seeds) >= 2 and max(diffs) - min(diffs) > 1e-12:  # else the t statistic is 0/0 (or rounding)
                p = float(ttest_rel(ours, theirs).pvalue)
            r["vs_best"] = {"variant": best["variant"], "delta": sum(ours) / len(ours) - sum(theirs) / len(theirs),
                            "p": p, "pairs": len(seeds)}


def _vs_best(r: dict) -> str:
    """'-0.0021 (p 0.014)': the row's mean AUC minus the best's, over the seeds both finished."""
    vs = r.get("vs_best")
    if vs is None:
        return "–"
    p = f"p {vs['p']:.2g}" if _finite(vs["p"]) else "p n/a"
    return f"{vs['delta']:+.4f} ({p}, {vs['pairs']} seed{'s' if vs['pairs'] != 1 else ''})"


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _fmt(mean, std, best=None, digits=4) -> str:
    """'mean ± std', in bold when `mean` is the column's `best`."""
    if mean is None:
        return "–"
    if not _finite(mean):
        return "n/a"  # undefined on the test split (one class), as dlf train prints it
    text = f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")
    return f"**{text}**" if mean == best else text


def _num(x, fmt="{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _environment(records: list[dict]) -> str:
    for r in records:
        env_path = Path(r["run_dir"]) / "environment.json"
        if r["metrics"] is not None and env_path.is_file():
            try:
                env = json.loads(env_path.read_text())
            except ValueError:  # cut short (it only describes the machine): the next run's
                continue
            bits = [f"torch {env.get('torch', '?')}", f"device {env.get('device', '?')}",
                    f"threads {env.get('threads') or env.get('torch_threads') or 'default'}"]
            if env.get("git_commit"):
                bits.append(f"commit {env['git_commit']}")
            return ", ".join(bits)
    return f"python {platform.python_version()}"


def yaml_text(value) -> str:
    """A setting's value as one writes it in YAML or --set: false, true and null (str() gives False, True, None)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(map(yaml_text, value)) + "]"
    return str(value)


def _set_text(values: dict) -> str:
    return ", ".join(f"`{k}={yaml_text(v)}`" for k, v in values.items()) or "none"


def render_markdown(result, spec, cli_sets: dict, rows: list[dict]) -> str:
    runs = [r for r in result.records if r["kind"] == "run"]
    trials = [r for r in result.records if r["kind"] == "trial"]
    done = sum(r["metrics"] is not None for r in runs)
    failed = sum(r["status"] == "failed" for r in runs)
    pending = sum(r["status"] in ("pending", "planned") for r in runs)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Benchmark `{result.out}`", "",
             f"{now}. {len(runs)} runs: {done} done, {failed} failed, {pending} not run yet"
             + (f"; {len(trials)} search trials" if trials else "") + (" (**interrupted**)" if result.interrupted
                                                                      else "") + ".",
             f"Seeds: {', '.join(map(str, spec.seeds))}. Environment: {_environment(result.records)}.",
             "Mean ± sample std over the seeds that finished (std omitted for one seed); the best of each column in "
             "bold (of the variants whose every seed finished, when there are any). `vs best` = mean test AUC minus "
             "the best variant's over the seeds both finished, with the p-value of a two-sided paired t-test over "
             "them (runs pair by seed; n/a: fewer than 2 seeds, or the same difference on each). `epochs` = epochs run "
             "(early stopping), `train s` = training wall-clock including per-epoch validation, `samples/s` = "
             "training throughput; timing columns are noisy when other processes share the machine.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ds_rows = [r for r in rows if r["dataset"] == dataset]
        good, best = ranked(ds_rows)
        bad = [r for r in ds_rows if r["auc_mean"] is None]
        # as a paper table marks them: the best logloss is often another variant's than the best AUC (rank 1)
        full = [r for r in good if r["ok"] == r["seeds"]] or good
        best_auc = None if best is None else best["auc_mean"]
        best_logloss = min((r["logloss_mean"] for r in full if _finite(r["logloss_mean"])), default=None)
        lines += [f"## {dataset}", "",
                  "| # | variant | model | seeds ok | test AUC | vs best | test logloss | params | epochs | train s "
                  "| samples/s |",
                  "|---:|---|---|---|---|---|---|---:|---:|---:|---:|"]
        for i, r in enumerate(good, 1):
            note = "" if r["ok"] == r["seeds"] else f" ({r['failed']} failed, {r['pending']} not run)"
            lines.append(f"| {i} | {r['variant']} | {r['model']} | {r['ok']}/{r['seeds']}{note} | "
                         f"{_fmt(r['auc_mean'], r['auc_std'], best_auc)} | {_vs_best(r)} | "
                         f"{_fmt(r['logloss_mean'], r['logloss_std'], best_logloss)} | "
                         f"{_num(r['parameters'])} | {_num(r['epochs'], '{:.1f}')} | "
                         f"{_num(r['train_seconds'], '{:,.1f}')} | {_num(r['samples_per_s'])} |")
        oracle = next((r["oracle"] for r in ds_rows if r["oracle"]), None)
        if oracle:  # (its AUC is null in metrics.json, NaN fresh from dlf.train, on a one-class test split)
            lines.append(f"| | oracle (true probabilities) | | | {show(oracle['auc'])} | | {show(oracle['logloss'])} "
                         "| | | | |")
        for r in bad:
            status = "FAILED" if r["failed"] else "not run yet"
            why = f": {r['errors'][0]}" if r["errors"] else ""
            why = why.replace("|", "\\|")
            lines.append(f"| – | {r['variant']} | {r['model']} | 0/{r['seeds']} {status}{why} "
                         "| – | – | – | – | – | – | – |")
        lines.append("")
        if best is not None and oracle and _finite(oracle["auc"]):
            gap = oracle["auc"] - best["auc_mean"]
            lines += [f"Best: {best['variant']} ({best['auc_mean']:.4f}), {gap:.4f} AUC below the oracle.", ""]
    # settings
    lines += ["## Settings", "", f"- every run: {_set_text(spec.set)}"
              + (f" (base config `{spec.config}`)" if spec.config else "")]
    if cli_sets:  # listed apart: unlike `set`, they win over the datasets' and variants' own values below
        lines.append(f"- every run, over the dataset and variant settings below (`--set`): {_set_text(cli_sets)}")
    for ds in spec.datasets:
        where = "built-in synthetic data" if ds.path is None else f"`{ds.path}`"
        lines.append(f"- dataset {ds.name}: {where}; {_set_text(ds.set)}")
    for v in spec.models:
        lines.append(f"- {v.name}: model `{v.model}`; {_set_text(v.set)}")
    skipped = sorted({(r["variant"], k) for r in result.records for k in r.get("skipped_keys", [])})
    if skipped:
        per: dict[str, list[str]] = {}
        for variant, key in skipped:
            per.setdefault(variant, []).append(key)
        lines.append("- common overrides not applicable (no such model key), skipped: "
                     + "; ".join(f"{v}: {', '.join(ks)}" for v, ks in per.items()))
    lines.append("")
    if result.selections:
        size, trials = math.prod(len(v) for v in spec.search.grid.values()), spec.search.trials
        points = (f"{trials} of its {size} points" if 0 < trials < size
                  else f"the whole grid ({size} point{'s' if size > 1 else ''})")
        lines += ["## Hyper-parameter search", "",
                  f"Grid: {_set_text({k: v for k, v in spec.search.grid.items()})}; {points}"
                  " per model (one seed), the one with the best validation "
                  "score then trained with every seed. Validation score: the monitor (`train.monitor`, in brackets) "
                  "at the trial's best epoch, higher is better: auc-logloss = AUC − logloss, logloss = −logloss.",
                  "",
                  "| dataset | variant | trials done | chosen | validation score | grid keys not applicable |",
                  "|---|---|---|---|---:|---|"]
        for (dataset, variant), sel in result.selections.items():
            # no choice yet after Ctrl-C (or --report-only) with trials not run: not the same as every trial failed
            failed = sum(r["kind"] == "trial" and r["dataset"] == dataset and r["variant"] == variant
                         and r["status"] == "failed" for r in result.records)
            chosen = (_set_text(sel["params"]) if sel["params"] is not None
                      else "none (every trial failed)" if failed == sel["trials"]
                      else f"none yet ({sel['trials'] - sel['completed'] - failed} trial(s) not run)")
            score = "–" if sel["score"] is None else f"{sel['score']:.4f} ({sel['monitor']})"
            lines.append(f"| {dataset} | {variant} | {sel['completed']}/{sel['trials']} | {chosen} | {score} | "
                         f"{', '.join(sel.get('skipped_grid_keys') or []) or '–'} |")
        lines.append("")
    failures = [r for r in result.records if r["status"] == "failed"]
    if failures:
        lines += ["## Failed runs", ""]
        for r in failures:
            what = f"trial {r['trial']}" if r["kind"] == "trial" else f"seed {r['seed']}"
            lines.append(f"- {r['dataset']} / {r['variant']} / {what}: {r['error']} "
                         f"(details: `{Path(r['run_dir']) / 'error.json'}`)")
        lines.append("")
    waiting = [r for r in result.records if r["status"] == "pending"]
    if waiting:
        lines += ["## Not run yet", "", "Rerun the same `dlf bench` command to run these (finished runs are kept):",
                  ""]
        lines += [f"- {r['dataset']} / {r['variant']} / "
                  + (f"trial {r['trial']}" if r["kind"] == "trial" else f"seed {r['seed']}") for r in waiting]
        lines.append("")
    return "\n".join(lines)


def run_rows(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        m = r["metrics"] or {}
        out.append({"kind": r["kind"], "dataset": r["dataset"], "variant": r["variant"], "model": r["model"],
                    # the run's state, not what this invocation did with it ('skipped': finished before)
                    "seed": r["seed"], "trial": r["trial"] or "", "status": "done" if m else r["status"],
                    # undefined (null in metrics.json, NaN fresh from dlf.train) is empty, as for a failed run
                    **{f"test_{k}": m["test"][k] if m and _finite(metric(m["test"][k])) else ""
                       for k in ("auc", "logloss")},
                    "val_score": r.get("val_score", "") if r.get("val_score") is not None else "",
                    "parameters": m.get("parameters", ""), "epochs_run": m.get("epochs_run", ""),
                    "best_epoch": m.get("best_epoch", ""), "train_seconds": m.get("train_seconds", ""),
                    "samples_per_s": train_samples_per_s(m) if m else "",
                    "trial_params": json.dumps(r.get("trial_params") or {}) if r.get("trial_params") else "",
                    "error": r["error"] or "", "run_dir": r["run_dir"]})
    return out


def plot_chart(rows: list[dict], path: Path) -> str | None:
    """One panel per dataset: mean test AUC per variant with ± std error bars; the oracle as a dashed line.

    Returns None, or why there is no chart (then an older one at `path` is removed: it would contradict the report).
    """
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    missing = None if any(_finite(r["auc_mean"]) for r in rows) else "no finished run with a test AUC"
    if missing is None:
        try:
            from matplotlib import figure  # not pyplot: see dlf.train.logging.plot_learning_curves
        except ImportError:
            missing = "matplotlib is not installed (pip install matplotlib)"
    if missing is not None:
        path.unlink(missing_ok=True)
        return missing
    heights = [max(2.0, 0.35 * sum(r["dataset"] == d for r in rows) + 1.2) for d in datasets]
    fig = figure.Figure(figsize=(8, sum(heights)))
    axes = fig.subplots(len(datasets), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, dataset in zip(axes[:, 0], datasets):
        ds = sorted((r for r in rows if r["dataset"] == dataset),
                    key=lambda r: r["auc_mean"] if _finite(r["auc_mean"]) else -1)
        # a mean over fewer seeds than planned (a failed or pending run) is said so, as in the report's table
        names = [r["variant"] + ("" if _finite(r["auc_mean"]) else " (failed)" if r["auc_mean"] is None
                                 else " (AUC undefined)") + ("" if r["ok"] in (0, r["seeds"])
                                                             else f" ({r['ok']}/{r['seeds']} seeds)") for r in ds]
        means = [r["auc_mean"] if _finite(r["auc_mean"]) else float("nan") for r in ds]
        errs = [r["auc_std"] if _finite(r["auc_std"]) else 0.0 for r in ds]
        ax.barh(names, means, xerr=errs, color=["tab:red" if r["model"].startswith("dlf") else "tab:blue"
                                                for r in ds], alpha=0.8, capsize=3)
        ends = [m + sign * e for m, e in zip(means, errs) if not math.isnan(m) for sign in (-1, 1)]  # whole bars
        oracle = next((r["oracle"] for r in ds if r["oracle"] and _finite(r["oracle"]["auc"])), None)
        known = ends + ([oracle["auc"]] if oracle else [])
        if known:  # a dataset whose runs all failed has no bar (another dataset's panel has some)
            hi, lo = max(known), min(known)
            ax.set_xlim(lo - max(0.01, 0.15 * (hi - lo)), hi + max(0.005, 0.05 * (hi - lo)))
        if oracle:
            ax.axvline(oracle["auc"], color="black", linestyle="--", linewidth=1, label="oracle")
            ax.legend(loc="lower right")
        ax.set_title(f"{dataset}: test AUC (mean ± std over seeds)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic_write_png(fig, path)
    return None


def write_report(result, spec, cli_sets: dict) -> tuple[Path, str | None]:
    """Writes report.md, results.csv, summary.json and bench.png; returns report.md and why there is no chart."""
    out = Path(result.out)
    rows = summarize(result.records)
    compare_to_best(rows)
    atomic_write_text(out / "report.md", render_markdown(result, spec, cli_sets, rows) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_COLUMNS)
    writer.writeheader()
    writer.writerows(run_rows(result.records))
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_json(out / "summary.json", {
        "interrupted": result.interrupted, "rows": [{k: v for k, v in r.items()} for r in rows],
        "search": [{"dataset": d, "variant": v, **sel} for (d, v), sel in result.selections.items()]})
    return out / "report.md", plot_chart(rows, out / "bench.png")
