"""Preprocessing throughput and peak memory on generated Criteo-format files.

    python benchmarks/preprocess.py --rows 1000000 10000000 [--workdir /tmp/dlf-bench]

For each size: writes a Criteo `train.txt`-format TSV (label, I1-I13, C1-C26; Zipf-distributed
values with Criteo-like cardinalities, ~4 % empty), then runs `dlf preprocess --preset criteo`
in a child process and reports rows/s (of the whole command, Python start and imports included,
and of the preprocessing itself), the child's CPU seconds and its peak RSS. When the `fuxictr` package
is installed, also times its FeatureProcessor on the same file (it is not a dependency). Also times the floor
under any such pipeline here: Arrow's multi-threaded CSV reader on the same file, doing nothing else.
Record the figures in docs/benchmarks.md; run nothing else on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

# distinct values per categorical column, roughly Criteo's (the largest capped so that generation stays quick)
CARDINALITIES = [1460, 583, 1_000_000, 800_000, 305, 24, 12517, 633, 3, 93145, 5683, 1_000_000, 3194, 27, 14992,
                 1_000_000, 10, 5652, 2173, 4, 1_000_000, 18, 15, 286181, 105, 142572]


def _text(arr: pa.Array, empty: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(empty), "", arr)


def _hex8(ids: np.ndarray) -> pa.Array:
    """'%08x' of each id (< 2**32), vectorised: eight hex digits per row, one string buffer."""
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)[(ids[:, None] >> np.arange(28, -1, -4)) & 0xF]
    offsets = np.arange(0, 8 * len(ids) + 1, 8, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(ids), [None, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes())])


def generate(path: Path, rows: int, seed: int = 0, chunk: int = 200_000) -> None:
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part")
    names = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with pcsv.CSVWriter(tmp, pa.schema([(c, pa.string()) for c in names]), write_options=options) as out:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cols = [pc.cast(pa.array((rng.random(n) < 0.25).astype(np.int8)), pa.string())]
            for _ in range(13):
                v = pc.cast(pa.array(np.floor(rng.lognormal(1.5, 1.8, n)).astype(np.int64)), pa.string())
                cols.append(_text(v, rng.random(n) < 0.04))
            for card in CARDINALITIES:
                ids = np.minimum(rng.zipf(1.3, n), card) * 2654435761 % (1 << 32)
                cols.append(_text(_hex8(ids), rng.random(n) < 0.04))
            out.write_table(pa.table(cols, names=names))
    tmp.replace(path)


def run_dlf(src: Path, out: Path) -> dict:
    """`dlf preprocess` in a child process that prints its own peak RSS and CPU time on exit."""
    argv = ["dlf", "preprocess", "--preset", "criteo", "--input", str(src), "--out", str(out), "--force"]
    code = ("import atexit, resource, sys\n"
            "u = lambda: resource.getrusage(resource.RUSAGE_SELF)\n"
            "atexit.register(lambda: print('PEAK_RSS_KB', u().ru_maxrss, 'CPU_S', u().ru_utime + u().ru_stime,"
            " file=sys.stderr))\n"
            f"sys.argv = {argv!r}\n"
            "from dlf.cli import main\nmain()\n")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(proc.stderr)
    peak_kb, _, cpu = proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[:3]
    meta = json.loads((out / "feature_map.json").read_text())["meta"]
    rows = sum(s["rows"] for s in meta["splits"].values())
    # seconds: the whole command (Python start and imports included); preprocess_seconds: the two passes
    return {"tool": "dlf", "rows": rows, "seconds": round(wall, 2), "rows_per_s": round(rows / wall),
            "preprocess_seconds": meta["seconds"], "preprocess_rows_per_s": round(rows / meta["seconds"]),
            "cpu_seconds": round(float(cpu), 2), "peak_rss_mb": round(int(peak_kb) / 1024)}


def run_parse_floor(src: Path) -> dict:
    """The floor under any preprocessing of this file here: Arrow's multi-threaded CSV reader (all cores) turning
    the text into string columns, and nothing else (no validation, no vocabularies, nothing written)."""
    cols = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    t, cpu = time.perf_counter(), time.process_time()  # (CPU time of every thread of this process)
    table = pcsv.read_csv(src, read_options=pcsv.ReadOptions(column_names=cols, use_threads=True),
                          parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
                          convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in cols}))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"tool": "arrow read_csv only", "rows": table.num_rows, "seconds": round(wall, 2),
            "rows_per_s": round(table.num_rows / wall), "cpu_seconds": round(cpu, 2)}


def run_fuxictr(src: Path, work: Path, rows: int, max_rows: int) -> dict | None:
    """FuxiCTR's own pipeline (>= 2.3: Polars lazy frames, Ray for the transform) on the same rows: every column
    categorical (as strings), min count 10, Parquet output. Its reader needs a header and a `.csv` name, and its
    ratio split does not work on lazy frames (2.3.10), so it reads the rows as three files (0.8/0.1/0.1 in file
    order, as the BARS splits come), with headers, written before the clock starts."""
    try:
        import fuxictr  # noqa: F401
    except ImportError:
        return None
    if rows > max_rows:
        return {"tool": "fuxictr", "skipped": f"{rows} rows > --fuxictr-max-rows {max_rows}"}
    cols = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    splits = {name: work.parent / f"{src.stem}.fuxictr.{name}.csv" for name in ("train", "valid", "test")}
    if not all(f.exists() for f in splits.values()):
        counts = {"train": int(rows * 0.8), "valid": int(rows * 0.9) - int(rows * 0.8), "test": rows - int(rows * 0.9)}
        with src.open("rb") as inp:
            for name, path in splits.items():
                with path.open("wb") as out:
                    out.write(("\t".join(cols) + "\n").encode())
                    out.writelines(line for _, line in zip(range(counts[name]), inp))
    code = f"""
import time, resource
from fuxictr.preprocess import FeatureProcessor, build_dataset
cols = {cols!r}
t = time.perf_counter()
fp = FeatureProcessor(feature_cols=[{{'name': cols[1:], 'active': True, 'dtype': 'str', 'type': 'categorical'}}],
                      label_col={{'name': 'label', 'dtype': 'float'}}, dataset_id='bench', data_root={str(work)!r})
build_dataset(fp, train_data={str(splits["train"])!r}, valid_data={str(splits["valid"])!r},
              test_data={str(splits["test"])!r}, data_format='csv', sep='\\t', min_categr_count=10)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        return {"tool": "fuxictr", "error": proc.stderr.strip().splitlines()[-1:]}
    secs, rss = proc.stdout.split()[-2:]
    # Ray's workers are not this process's children: the RSS is the driver's only
    return {"tool": "fuxictr", "version": fuxictr.__version__, "seconds": round(float(secs), 2),
            "driver_peak_rss_mb": round(int(rss) / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dlf-bench-preprocess"))
    ap.add_argument("--fuxictr-max-rows", type=int, default=2_000_000,
                    help="skip FuxiCTR above this many rows (its pipeline holds the whole table in memory)")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        src = args.workdir / f"criteo_{rows}.txt"
        if not src.exists():
            t = time.perf_counter()
            generate(src, rows)
            print(f"generated {src} ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f}s",
                  file=sys.stderr)
        load = os.getloadavg()[0]
        r = run_dlf(src, args.workdir / f"out_{rows}")
        r["file_mb"] = round(src.stat().st_size / 1e6)
        r["load_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]  # before, after: other jobs on the cores
        results.append(r)
        print(json.dumps(r))
        floor = run_parse_floor(src)
        floor["dlf_share_of_floor"] = round(floor["seconds"] / r["seconds"], 2)  # dlf rows/s as a fraction of it
        results.append(floor)
        print(json.dumps(floor))
        f = run_fuxictr(src, args.workdir / f"fuxi_{rows}", rows, args.fuxictr_max_rows)
        if f is not None:
            f["rows"] = rows
            if "seconds" in f:
                f["rows_per_s"] = round(rows / f["seconds"])
                f["dlf_speedup"] = round(f["seconds"] / r["seconds"], 1)  # whole commands, dlf's start-up included
            results.append(f)
            print(json.dumps(f))
    print(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
