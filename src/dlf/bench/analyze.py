"""`dlf analyze RUN [RUN ...]`: the evidence behind DLF's two claims, from finished run directories.

(a) Gradient balance: RUN/grad_norms.csv (written with `--set train.grad_norm_every_steps=N`, see
    dlf.train.grad_norms) -> grad_norms-RUN.png: the gradient norm of every branch / stream summed
    over layers, its per-value RMS, and one panel per layered branch with a line per layer.

(b) Low-order signal across depth (synthetic data only): a linear probe per layer. For the tokens of
    each layer (E1 = the embedding output = layer 0, then each DLF layer's output E^(l+1)), flattened
    to B x (N d), a ridge regression is fit on `probe_rows` train rows to predict the planted logit
    components of the synthetic generator (dlf.data.synthetic: first order, pairwise, their sum
    s1 first + s2 pair = "low-order", and the third-order part for contrast); the ridge strength is
    chosen on validation rows and R^2 is reported on test rows. The same probe on the model's initial
    weights (same seed, untrained) is the reference. Inputs wider than `max_features` are reduced by
    a fixed Gaussian random projection first (keeps the cost of a probe at a few seconds).
    -> probe.csv and probe.png (all runs in one chart: e.g. DLF with and without alpha).
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from dlf._io import atomic_write_png, atomic_write_text

TARGETS = ("first", "pair", "low-order", "triple")
LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ridge strength, times the number of fit rows


class AnalysisError(ValueError):
    pass


# ---------------------------------------------------------------- (a) gradient norms

def _aggregate(rows: list[dict], key) -> dict:
    """{label: (steps, norms)} with the norms of the rows sharing (step, key(row)) combined as sqrt(sum sq)."""
    acc: dict = {}
    for r in rows:
        label = key(r)
        sq, n = acc.setdefault(label, {}).get(r["step"], (0.0, 0))
        acc[label][r["step"]] = (sq + r["grad_norm"] ** 2, n + r["params"])
    out = {}
    for label, by_step in acc.items():
        steps = sorted(by_step)
        out[label] = (steps, [math.sqrt(by_step[s][0]) for s in steps],
                      [math.sqrt(by_step[s][0] / max(by_step[s][1], 1)) for s in steps])
    return out


def grad_norm_summary(rows: list[dict]) -> list[dict]:
    """Per group (summed over layers): mean gradient norm and RMS over the logged steps, first and last."""
    out = []
    for group, (steps, norms, rms) in _aggregate(rows, lambda r: r["group"]).items():
        out.append({"group": group, "logged_steps": len(steps), "mean_grad_norm": float(np.mean(norms)),
                    "mean_grad_rms": float(np.mean(rms)), "first_grad_norm": norms[0], "last_grad_norm": norms[-1]})
    return out


def plot_grad_norms(rows: list[dict], path: Path, title: str) -> bool:
    try:
        from matplotlib import figure  # not pyplot: see dlf.train.logging.plot_learning_curves
    except ImportError:
        return False
    groups = _aggregate(rows, lambda r: r["group"])
    layered = sorted({r["group"] for r in rows if r["layer"] > 0}, key=lambda g: [r["group"] for r in rows].index(g))
    n_panels = 2 + len(layered)
    cols = min(n_panels, 4)
    nrows = math.ceil(n_panels / cols)
    fig = figure.Figure(figsize=(4.2 * cols, 3.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    flat = axes.ravel()
    for ax, which, name in ((flat[0], 1, "gradient norm per branch / stream"),
                            (flat[1], 2, "gradient RMS per value")):
        for label, series in groups.items():
            ax.plot(series[0], series[which], label=label, linewidth=1.2)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=7, ncol=2)
    for ax, group in zip(flat[2:], layered):
        per_layer = _aggregate([r for r in rows if r["group"] == group], lambda r: r["layer"])
        for layer, (steps, norms, _) in sorted(per_layer.items()):
            ax.plot(steps, norms, label=f"layer {layer}", linewidth=1.2)
        ax.set_yscale("log")
        ax.set_title(f"{group}: gradient norm per layer", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in flat[n_panels:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    atomic_write_png(fig, path)
    return True


# ---------------------------------------------------------------- (b) linear probe

def probe_targets(components: dict[str, np.ndarray], first_order: float, pairwise: float) -> dict[str, np.ndarray]:
    return {"first": components["first"], "pair": components["pair"],
            "low-order": first_order * components["first"] + pairwise * components["pair"],
            "triple": components["triple"]}


@torch.no_grad()
def layer_tokens(model, data, rows: int, batch_size: int = 4096) -> list[np.ndarray]:
    """[E1, E^(2), ..., E^(L+1)] of the first `rows` rows of `data`, each flattened to rows x (N d)."""
    if not hasattr(model, "layer_outputs"):
        raise AnalysisError(f"{type(model).__name__} has no per-layer tokens to probe (DLF models only)")
    model.eval()
    parts: list[list[np.ndarray]] = []
    seen = 0
    for batch in data.batches(batch_size):
        if seen >= rows:
            break
        e1 = model.embedding(batch)
        outs = [e1] + model.layer_outputs(e1)
        take = min(rows - seen, len(batch))
        if not parts:
            parts = [[] for _ in outs]
        for store, t in zip(parts, outs):
            store.append(t[:take].flatten(1).double().numpy())
        seen += take
    return [np.concatenate(p) for p in parts]


def _project(x: np.ndarray, max_features: int, seed: int = 0) -> np.ndarray:
    if x.shape[1] <= max_features:
        return x
    rng = np.random.default_rng(seed)
    return x @ (rng.standard_normal((x.shape[1], max_features)) / math.sqrt(max_features))


def ridge_probe(x_fit: np.ndarray, y_fit: dict[str, np.ndarray], x_val: np.ndarray, y_val: dict[str, np.ndarray],
                x_test: np.ndarray, y_test: dict[str, np.ndarray], max_features: int = 1024) -> dict[str, dict]:
    """Ridge regression per target: strength chosen on the validation rows; R^2 on the test rows."""
    d = x_fit.shape[1]
    x_fit, x_val, x_test = (_project(x, max_features) for x in (x_fit, x_val, x_test))
    mu, sd = x_fit.mean(0), x_fit.std(0)
    sd[sd < 1e-12] = 1.0
    z_fit, z_val, z_test = ((x - mu) / sd for x in (x_fit, x_val, x_test))
    gram = z_fit.T @ z_fit
    evals, evecs = np.linalg.eigh(gram)
    evals = np.clip(evals, 0, None)
    n = len(z_fit)
    out = {}
    for name, y in y_fit.items():
        ym = y.mean()
        rhs = evecs.T @ (z_fit.T @ (y - ym))
        best = None
        for lam in LAMBDAS:
            w = evecs @ (rhs / (evals + lam * n))
            r2_val = _r2(y_val[name], z_val @ w + ym)
            if best is None or r2_val > best[0]:
                best = (r2_val, lam, w)
        r2_val, lam, w = best
        out[name] = {"r2": _r2(y_test[name], z_test @ w + ym), "r2_valid": r2_val, "ridge": lam,
                     "features": d, "probe_features": z_fit.shape[1]}
    return out


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    sst = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / max(sst, 1e-12)


def load_run(run: Path):
    """(RunConfig, metrics dict or None) of a run directory."""
    from dlf.config import ConfigError, load_config

    if not (run / "config.yaml").is_file():
        raise AnalysisError(f"{run} is not a run directory (no config.yaml)")
    try:
        cfg = load_config(run / "config.yaml")
    except ConfigError as exc:
        raise AnalysisError(f"{run / 'config.yaml'}: {exc}") from None
    metrics = None
    if (run / "metrics.json").is_file():
        import json
        try:
            metrics = json.loads((run / "metrics.json").read_text())
        except (ValueError, UnicodeDecodeError) as exc:  # cut off or edited: was a JSONDecodeError traceback
            raise AnalysisError(f"{run / 'metrics.json'}: not readable JSON ({exc}); delete it to analyze the run "
                                "without it") from None
    return cfg, metrics


def probe_run(run: Path, rows: int = 20_000, max_features: int = 1024, data=None,
              log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Probe R^2 per layer and target for the trained weights and for the initial weights of a DLF run
    on synthetic data. `data`: the regenerated dataset (to share between runs on the same data)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dlf.data.synthetic import generate
    from dlf.models import build_model, weights_mismatch

    cfg, metrics = load_run(run)
    if cfg.data.dataset != "synthetic":
        raise AnalysisError(f"{run}: the probe needs the synthetic data (its planted components); "
                            f"this run used {cfg.data.dataset}")
    if not (run / "model.safetensors").is_file():
        raise AnalysisError(f"{run}: no model.safetensors (the run has not finished)")
    data = data or generate(cfg.data.synthetic)
    if not data.components:
        raise AnalysisError("the synthetic generator did not return its planted components")
    if metrics and "oracle_test" in metrics:
        from dlf.train.metrics import classification_metrics
        # logloss: defined on any split (the AUC of a one-class test split is null in metrics.json)
        again = classification_metrics(data.test.label, data.test.prob)["logloss"]
        if abs(again - metrics["oracle_test"]["logloss"]) > 1e-9:
            log(f"warning: {run}: the regenerated synthetic data differ from the run's (oracle logloss "
                f"{again:.6f} vs {metrics['oracle_test']['logloss']:.6f}); the generator changed since the run")
    s = cfg.data.synthetic
    n_fit = min(rows, len(data.train))
    n_eval = min(max(rows // 2, 100), len(data.valid), len(data.test))
    ys = {split: {k: v[:n] for k, v in probe_targets(data.components[split], s.first_order, s.pairwise).items()}
          for split, n in (("train", n_fit), ("valid", n_eval), ("test", n_eval))}
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model_name, data.feature_map, cfg.model)
    results = []
    for weights in ("init", "trained"):
        if weights == "trained":
            try:
                state = load_file(str(run / "model.safetensors"))
            except (SafetensorError, OSError) as exc:  # truncated or not safetensors: was a SafetensorError traceback
                raise AnalysisError(f"{run / 'model.safetensors'}: not readable weights ({exc})") from None
            if mismatch := weights_mismatch(model, state):
                raise AnalysisError(f"{run / 'model.safetensors'}: does not fit model {cfg.model_name!r}: {mismatch}")
            model.load_state_dict(state)
        feats = {split: layer_tokens(model, getattr(data, split), n)
                 for split, n in (("train", n_fit), ("valid", n_eval), ("test", n_eval))}
        for layer in range(len(feats["train"])):
            r = ridge_probe(feats["train"][layer], ys["train"], feats["valid"][layer], ys["valid"],
                            feats["test"][layer], ys["test"], max_features)
            for target, v in r.items():
                results.append({"run": str(run), "model": cfg.model_name, "alpha": getattr(cfg.model, "alpha", None),
                                "weights": weights, "layer": layer, "target": target, **v, "fit_rows": n_fit,
                                "test_rows": n_eval})
    return results


PROBE_COLUMNS = ["run", "model", "alpha", "weights", "layer", "target", "r2", "r2_valid", "ridge", "features",
                 "probe_features", "fit_rows", "test_rows"]


def plot_probe(results: list[dict], path: Path, labels: dict[str, str]) -> bool:
    try:
        import matplotlib
        import matplotlib.ticker
        from matplotlib import figure  # not pyplot: see dlf.train.logging.plot_learning_curves
    except ImportError:
        return False
    fig = figure.Figure(figsize=(4 * len(TARGETS), 3.6))
    axes = fig.subplots(1, len(TARGETS), squeeze=False)
    runs = list(dict.fromkeys(r["run"] for r in results))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, target in zip(axes[0], TARGETS):
        for i, run in enumerate(runs):
            for weights, style in (("trained", "-"), ("init", ":")):
                pts = sorted((r["layer"], r["r2"]) for r in results
                             if r["run"] == run and r["target"] == target and r["weights"] == weights)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=colors[i % len(colors)],
                            label=f"{labels[run]}" + (" (init)" if weights == "init" else ""))
        ax.set_title(f"R² of a linear probe: {target}", fontsize=10)
        ax.set_xlabel("layer (0 = embedding)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write_png(fig, path)
    return True


def _label(run: Path, cfg) -> str:
    bits = [cfg.model_name]
    if getattr(cfg.model, "alpha", True) is False:
        bits.append("no alpha")
    return f"{run.parent.name}/{run.name}" if run.name.startswith("seed-") else f"{run.name} ({', '.join(bits)})"


def analyze_runs(runs: list[Path], out: Path | None = None, *, probe_rows: int = 20_000, probe: bool = True,
                 max_features: int = 1024, log: Callable[[str], None] = lambda m: None) -> dict:
    """Write the analyses of `runs` into `out` (default: the first run's analysis/ folder)."""
    from dlf.train.grad_norms import read_grad_norms

    runs = [Path(r) for r in runs]
    if not runs:
        raise AnalysisError("give at least one run directory")
    configs = {}
    for run in runs:
        configs[run] = load_run(run)[0]
    out = Path(out) if out is not None else runs[0] / "analysis"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the path, no permission: was a NotADirectoryError traceback
        raise AnalysisError(f"{out}: cannot write the analysis: {exc.strerror or exc}"
                            + (f": {exc.filename}" if exc.filename else "")) from None
    files: list[Path] = []
    summary = ["# Analysis", ""]
    labels = {str(r): _label(r, configs[r]) for r in runs}
    clash = [k for k, v in labels.items() if list(labels.values()).count(v) > 1]
    for k in clash:  # one variant on two datasets or benches ('dlf/seed-1' twice): one png overwrote the other
        labels[k] = f"{k.rstrip('/')} ({configs[Path(k)].model_name})"
    # (a) gradient norms
    for run in runs:
        csv_path = run / "grad_norms.csv"
        if not csv_path.is_file():
            log(f"{run}: no grad_norms.csv (train with --set train.grad_norm_every_steps=N to log gradient norms)")
            continue
        try:
            rows = read_grad_norms(csv_path)
        except (ValueError, UnicodeDecodeError) as exc:  # e.g. a line cut off by a killed run
            raise AnalysisError(f"{csv_path}: not a readable grad_norms.csv ({str(exc).splitlines()[0]}); delete it "
                                "or the bad line to analyze the rest") from None
        if not rows:
            log(f"{run}: grad_norms.csv is empty")
            continue
        # the label less its ' (model, ...)' part: its first word alone made 'my run' and 'my run2' one png
        name = re.sub(r" \([^()]*\)$", "", labels[str(run)]).replace("/", "-")
        png = out / f"grad_norms-{name}.png"
        if plot_grad_norms(rows, png, f"{labels[str(run)]}: gradient norms before clipping"):
            files.append(png)
        summary += [f"## Gradient norms: {labels[str(run)]}", "",
                    "| group | logged steps | mean norm | mean RMS | first | last |", "|---|---:|---:|---:|---:|---:|"]
        summary += [f"| {g['group']} | {g['logged_steps']} | {g['mean_grad_norm']:.3g} | {g['mean_grad_rms']:.3g} | "
                    f"{g['first_grad_norm']:.3g} | {g['last_grad_norm']:.3g} |" for g in grad_norm_summary(rows)]
        summary.append("")
    # (b) probe
    results: list[dict] = []
    if probe:
        from dlf.data.synthetic import generate
        cache: dict = {}
        for run in runs:
            cfg = configs[run]
            if cfg.data.dataset != "synthetic" or not cfg.model_name.startswith("dlf"):
                log(f"{run}: probe skipped (needs a DLF model on the synthetic data)")
                continue
            if not (run / "model.safetensors").is_file():  # a killed run: its gradient norms so far are still shown
                log(f"{run}: probe skipped (no model.safetensors: the run has not finished)")
                continue
            key = yaml.safe_dump(cfg.to_dict()["data"])
            if key not in cache:
                cache[key] = generate(cfg.data.synthetic)
            log(f"{run}: probing {cfg.model.layers + 1} token sets on {min(probe_rows, len(cache[key].train)):,} rows")
            results += probe_run(run, probe_rows, max_features, data=cache[key], log=log)
        if results:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=PROBE_COLUMNS)
            writer.writeheader()
            writer.writerows(results)
            atomic_write_text(out / "probe.csv", buf.getvalue())
            files.append(out / "probe.csv")
            if plot_probe(results, out / "probe.png", labels):
                files.append(out / "probe.png")
            sizes = {r["run"]: f"{labels[r['run']]}: {r['fit_rows']:,} / {r['test_rows']:,}" for r in results}
            summary += ["## Linear probe of the planted signal (test R²; init = same model untrained)", "",
                        "Rows (probe fit on train / ridge strength chosen on as many validation rows / R² on test): "
                        + "; ".join(sizes.values()) + ".", "",
                        "| run | weights | target | " + " | ".join(
                            f"layer {i}" for i in range(max(r['layer'] for r in results) + 1)) + " |",
                        "|---|---|---|" + "---:|" * (max(r['layer'] for r in results) + 1)]
            for run in dict.fromkeys(r["run"] for r in results):
                for weights in ("trained", "init"):
                    for target in TARGETS:
                        mine = [r for r in results
                                if r["run"] == run and r["weights"] == weights and r["target"] == target]
                        vals = [f"{r['r2']:.3f}" for r in sorted(mine, key=lambda r: r["layer"])]
                        summary.append(f"| {labels[run]} | {weights} | {target} | " + " | ".join(vals) + " |")
            summary.append("")
    atomic_write_text(out / "analysis.md", "\n".join(summary) + "\n")
    files.append(out / "analysis.md")
    return {"files": files, "probe": results}
