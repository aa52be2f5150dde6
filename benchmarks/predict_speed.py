"""Batch scoring speed: `dlf predict` on a Criteo-format file, PyTorch fp32 vs bf16 vs ONNX Runtime.

    python benchmarks/predict_speed.py                          # DLF at the authors' sizes, 200k rows scored
    python benchmarks/predict_speed.py --model dlf_concat --rows 500000 --batch-size 16384

Set-up (untimed, cached in --workdir): a Criteo train.txt-format TSV (benchmarks/preprocess.py's generator) of
--train-rows rows, `dlf preprocess --preset criteo`, one epoch of `dlf train` of --model at its registry defaults
(the weights do not change the speed), `dlf export --format onnx`; and a second file of --rows rows to score (other
rows from the same distributions, so unseen values take the out-of-vocabulary ids as in production).

Timed: `predict_file` (what `dlf predict` runs: stream the TSV in chunks, validate and encode with the bundle's
frozen encoders, score in sub-batches, write Parquet to a temporary file and rename) once per engine, each in its
own child process so that memory and allocator state do not carry over: torch fp32, torch bf16 (autocast), and
onnx when onnxruntime is installed. Printed per engine: rows/s of the whole job, the share of time in the model
call (the rest is reading, encoding and writing), rows/s of the model call alone, peak RSS, and the speed-up over
torch fp32 measured in the same run. Run nothing else on the machine meanwhile. `dlf predict` runs on TCMalloc when
it is installed (docs/training.md, "Memory"); to measure that here: LD_PRELOAD=<libtcmalloc> python benchmarks/...
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def prepare(work: Path, model: str, train_rows: int, rows: int) -> tuple[Path, Path]:
    """The bundle and the file to score (built once per (model, sizes) and reused)."""
    from rich.console import Console

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from preprocess import generate  # the Criteo-format generator of the preprocessing benchmark

    import dlf
    from dlf.data.preprocess import preprocess
    from dlf.serve.bundle import export_bundle

    work.mkdir(parents=True, exist_ok=True)
    score = work / f"score-{rows}.txt"
    if not score.exists():
        generate(score, rows, seed=1)
    tag = f"{model}-{train_rows}"
    bundle = work / f"bundle-{tag}"
    if bundle.exists():
        return bundle, score
    train_txt = work / f"train-{train_rows}.txt"
    if not train_txt.exists():
        generate(train_txt, train_rows, seed=0)
    data = work / f"data-{train_rows}"
    preprocess("criteo", [train_txt], data, force=True)
    cfg = {"model": {"name": model}, "data": {"dataset": "processed", "path": str(data)},
           "train": {"epochs": 1, "batch_size": 4096, "precision": "bf16", "progress": False, "tensorboard": False}}
    run = work / f"run-{tag}"
    dlf.train(cfg, out=run, console=Console(quiet=True))
    try:
        import onnxruntime  # noqa: F401
        fmt = "onnx"
    except ImportError:
        fmt = "torch"
    export_bundle(run, bundle, format=fmt, force=True)
    return bundle, score


class TimedScorer:
    """A Scorer that adds up the seconds spent in its calls (the model, or ONNX Runtime)."""

    def __init__(self, scorer):
        self.scorer, self.engine, self.seconds = scorer, scorer.engine, 0.0

    def __call__(self, batch):
        t = time.perf_counter()
        out = self.scorer(batch)
        self.seconds += time.perf_counter() - t
        return out


def run_worker(job: dict) -> dict:
    import torch

    from dlf._runtime import malloc_library
    from dlf.serve.bundle import load_bundle
    from dlf.serve.predict import Scorer, predict_file

    torch.set_num_threads(job["threads"])
    engine, precision = job["engine"].split("-")
    bundle = load_bundle(job["bundle"], build_model=engine == "torch")
    scorer = TimedScorer(Scorer(bundle, engine, job["batch_size"], job["threads"], precision))
    out = Path(job["out"])
    result = predict_file(bundle, job["input"], out, scorer=scorer)
    out.unlink()
    return {"engine": job["engine"], "malloc": malloc_library(), "rows": result.rows, "seconds": result.seconds,
            "model_seconds": scorer.seconds,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dlf", help="registry name, at its default (the authors') sizes")
    ap.add_argument("--rows", type=int, default=200_000, help="rows scored")
    ap.add_argument("--train-rows", type=int, default=50_000, help="rows the bundle's vocabularies come from")
    ap.add_argument("--batch-size", type=int, default=8192, help="rows per model call (dlf predict --batch-size)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="torch-fp32,torch-bf16,onnx-fp32")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "dlf-predict-bench")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.prepare:
        print(json.dumps([str(p) for p in prepare(args.workdir, args.model, args.train_rows, args.rows)]))
        return

    # Set-up and every engine run in child processes: a child's peak RSS would otherwise start from its parent's
    # (Linux keeps the larger of the two across fork and exec).
    proc = subprocess.run([sys.executable, __file__, "--prepare", *(argv if argv is not None else sys.argv[1:])],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"set-up failed:\n{proc.stderr[-3000:]}")
    bundle, score = (Path(p) for p in json.loads(proc.stdout.strip().splitlines()[-1]))
    engines = args.engines.split(",")
    if "onnx-fp32" in engines and not (bundle / "model.onnx").exists():
        print("onnxruntime is not installed: onnx skipped (pip install -e '.[serve]')")
        engines.remove("onnx-fp32")
    results = []
    for engine in engines:
        job = {"engine": engine, "bundle": str(bundle), "input": str(score), "batch_size": args.batch_size,
               "threads": args.threads, "out": str(args.workdir / f"scores-{engine}.parquet")}
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
        if proc.returncode:
            print(f"{engine}: failed\n{proc.stderr[-2000:]}")
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    base = next((r for r in results if r["engine"] == "torch-fp32"), None)
    print(f"\n{args.model} (registry defaults), {args.rows:,} Criteo-format rows scored from TSV to Parquet, "
          f"batch {args.batch_size:,}, {args.threads} threads, malloc {results[0]['malloc'] if results else '?'}")
    print(f"{'engine':11s} {'rows/s':>9s} {'seconds':>8s} {'model share':>11s} {'model rows/s':>12s} "
          f"{'peak RSS GB':>11s} {'vs torch-fp32':>13s}")
    for r in results:
        ratio = f"{base['seconds'] / r['seconds']:.2f}x" if base else "-"
        print(f"{r['engine']:11s} {r['rows'] / r['seconds']:9,.0f} {r['seconds']:8.1f} "
              f"{r['model_seconds'] / r['seconds']:11.0%} {r['rows'] / r['model_seconds']:12,.0f} "
              f"{r['peak_rss_gb']:11.2f} {ratio:>13s}")


if __name__ == "__main__":
    main()
