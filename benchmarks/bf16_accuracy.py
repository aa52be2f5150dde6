"""Does bf16 autocast keep test AUC? `dlf train` in fp32 and in bf16, paired by seed, on any config.

    python benchmarks/bf16_accuracy.py --config configs/demo.yaml --seeds 6      # the built-in synthetic data
    python benchmarks/bf16_accuracy.py --config configs/demo.yaml --seeds 6 --set data.dataset=processed \
        --set data.path=runs/data/ml1m                                          # a processed real dataset

For each seed the whole training job (`dlf.train`: early stopping on validation AUC, best weights kept) runs twice,
with train.precision=fp32 and =bf16 and the same train.seed, so both start from the same initial weights and see
the same batches; the paired gap (bf16 - fp32 test AUC) then carries no seed-to-seed noise of its own, only how far
the two trajectories drift apart. Printed: every run, the mean gap with its standard error and a 95% t-interval,
and the fp32 AUC spread across seeds (what two seeds disagree by anyway). bf16 keeps the accuracy within 0.001 when
the interval's lower end is above -0.001.

Scoring precision, apart from training: each fp32-trained model is also scored on the test split under bf16 autocast
(what `dlf predict --precision bf16` does with an fp32 model). Same weights, same rows: this gap has no training noise
and is measured exactly, as is how far each row's probability moves (relative to its fp32 value). `--train fp32`
trains in fp32 only, for that check alone (half the time).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats


def summarise(auc: dict[tuple[str, int], float], seeds: list[int]) -> dict:
    gaps = np.array([auc["bf16", s] - auc["fp32", s] for s in seeds])
    fp32 = np.array([auc["fp32", s] for s in seeds])
    out = {"seeds": seeds, "gaps": gaps.tolist(), "mean_gap": float(gaps.mean())}
    if len(seeds) > 1:
        se = gaps.std(ddof=1) / np.sqrt(len(gaps))
        half = stats.t.ppf(0.975, len(gaps) - 1) * se
        out.update(sd_gap=float(gaps.std(ddof=1)), se_gap=float(se), ci95=[float(gaps.mean() - half),
                   float(gaps.mean() + half)], fp32_sd=float(fp32.std(ddof=1)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a dlf run config (YAML)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as dlf train")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train", default="fp32,bf16", help="training precisions: fp32,bf16 (paired) or fp32")
    ap.add_argument("--json", type=Path, help="write runs and summary here (rewritten after every run)")
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console
    from safetensors.torch import load_file

    import dlf
    from dlf._io import atomic_write_text
    from dlf.api import load_data
    from dlf.config import load_config
    from dlf.models import build_model
    from dlf.train.metrics import classification_metrics
    from dlf.train.trainer import predict_proba

    precisions = args.train.split(",")
    if precisions not in (["fp32", "bf16"], ["fp32"]):
        ap.error(f"--train must be fp32,bf16 or fp32, got {args.train!r}")
    torch.set_num_threads(args.threads)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    auc, scoring_gaps, runs, data = {}, [], [], None
    for seed in seeds:
        for precision in precisions:
            cfg = load_config(args.config, [*args.set, f"train.precision={precision}", f"train.seed={seed}",
                                            "train.progress=false", "train.tensorboard=false"])
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                m = dlf.train(cfg, out=out, console=Console(quiet=True))
                seconds = time.perf_counter() - t
                run = {"seed": seed, "precision": precision, "test_auc": m["test"]["auc"],
                       "test_logloss": m["test"]["logloss"], "best_step": m["best_step"], "seconds": seconds}
                if precision == "fp32":  # the same weights scored under bf16 autocast
                    data = data or load_data(cfg)
                    model = build_model(cfg.model_name, data.feature_map, cfg.model)
                    model.load_state_dict(load_file(str(Path(out) / "model.safetensors")))
                    p32, p16 = (predict_proba(model, data.test, cfg.train.eval_batch_size, precision=p)
                                for p in ("fp32", "bf16"))
                    scored = classification_metrics(data.test.label, p16, data.test.group)
                    run["bf16_scoring_auc"] = scored["auc"]
                    rel = np.abs(p16 - p32) / p32  # each row's probability, relative to its fp32 value
                    run["bf16_scoring_relative_diff"] = {"median": float(np.median(rel)),
                                                         "p99": float(np.quantile(rel, 0.99)), "max": float(rel.max())}
                    scoring_gaps.append(scored["auc"] - m["test"]["auc"])
            auc[precision, seed] = m["test"]["auc"]
            runs.append(run)
            scoring = (f"  scored in bf16: AUC {run['bf16_scoring_auc']:.5f} ({scoring_gaps[-1]:+.6f}), probabilities "
                       "off by {median:.3%} (median), {p99:.2%} (99th percentile), {max:.2%} (largest) of their fp32 "
                       "value".format(**run["bf16_scoring_relative_diff"]) if precision == "fp32" else "")
            print(f"seed {seed} {precision}: test AUC {m['test']['auc']:.5f}  logloss {m['test']['logloss']:.5f}  "
                  f"best step {m['best_step']}  ({seconds:.0f} s){scoring}", flush=True)
        summary = summarise(auc, seeds[:seeds.index(seed) + 1]) if "bf16" in precisions else {}
        summary["bf16_scoring_gaps"] = scoring_gaps
        if args.json:  # atomically: benchmarks/gpu_check.sh's time limit may fall during a write
            atomic_write_text(args.json, json.dumps({"config": args.config, "set": args.set, "runs": runs,
                                                     "summary": summary}, indent=1))
    print(f"fp32 weights scored in bf16 - in fp32, test AUC per seed: {' '.join(f'{g:+.6f}' for g in scoring_gaps)} "
          f"(largest {max(map(abs, scoring_gaps)):.6f})")
    if "bf16" not in precisions:
        return
    s = summarise(auc, seeds)
    print(f"bf16 - fp32 test AUC per seed: {' '.join(f'{g:+.5f}' for g in s['gaps'])}")
    if len(seeds) > 1:
        lo, hi = s["ci95"]
        verdict = "bf16 loses at most 0.001" if lo >= -0.001 else "a bf16 loss over 0.001 not excluded"
        print(f"mean {s['mean_gap']:+.5f}  sd {s['sd_gap']:.5f}  standard error {s['se_gap']:.5f}  "
              f"95% interval [{lo:+.5f}, {hi:+.5f}]: {verdict}; fp32 AUC sd across seeds {s['fp32_sd']:.5f}")


if __name__ == "__main__":
    main()
