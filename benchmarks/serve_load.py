"""Load test of `dlf serve`: throughput and latency of POST /predict on this machine.

    python benchmarks/serve_load.py                      # builds a tiny demo bundle, 20 s per scenario
    python benchmarks/serve_load.py --bundle BUNDLE --duration 30 --concurrency 8 --engine onnx
    python benchmarks/serve_load.py --gzip               # bodies sent gzip-compressed, as batching clients do

Starts `dlf serve` as a child process on 127.0.0.1 (a free port; nothing else is ever
contacted), waits for /health, then for each scenario (1-record and 100-record requests) runs
`--concurrency` client threads with keep-alive connections for `--duration` seconds (plus a
short warm-up that is not counted) and reports requests/s, records/s, p50/p95/p99 latency and
the error count (any non-200 answer or failed connection), and the server's RSS before, between
and after the scenarios (from /proc). The server is stopped at the end, also on errors or Ctrl-C.
Records are drawn from the bundle's own vocabularies (and some unseen values), so they exercise
the same encoders as real traffic. Output: a table on stdout, and `--json FILE` for the numbers.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def make_records(bundle_path: Path, n: int, seed: int = 0) -> list[dict]:
    """n plausible records for the bundle: vocabulary values, numbers, some unseen and missing values."""
    from dlf.serve.bundle import load_bundle

    b = load_bundle(bundle_path, build_model=False)
    rng = random.Random(seed)
    enc = b.encoder
    pools: dict[str, list[str]] = {}
    if enc.mode == "raw":
        for st in enc.states:
            if st.vocab is not None and st.opts.column not in pools:
                pools[st.opts.column] = [str(v) for v in st.vocab.to_pylist()[:1000]]
    records = []
    for _ in range(n):
        rec = {}
        for f in enc.inputs:
            r = rng.random()
            if r < 0.05:
                rec[f.name] = None
            elif f.integer:
                rec[f.name] = rng.randrange(0, 50)
            elif f.number:
                rec[f.name] = round(rng.uniform(0, 100), 2)
            elif f.kind == "multi":
                pool = pools.get(f.name) or [str(i) for i in range(2, 20)]
                rec[f.name] = rng.sample(pool, min(len(pool), rng.randint(0, 3)))
            else:
                pool = pools.get(f.name)
                rec[f.name] = rng.choice(pool) if pool and r > 0.1 else f"unseen-{rng.randrange(10 ** 6)}"
        records.append(rec)
    return records


def build_demo_bundle(folder: Path) -> Path:
    from dlf.serve.bundle import export_bundle
    from dlf.serve.demo import build_demo_run

    paths = build_demo_run(folder / "demo", rows=3000, test_rows=300)
    return export_bundle(paths["run"], folder / "bundle")


class Client:
    def __init__(self, port: int, headers: dict) -> None:
        self.port, self.headers = port, headers
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> int:
        for attempt in (0, 1):  # one reconnect on a dropped keep-alive connection
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                self.conn.request("POST", "/predict", body=body, headers=self.headers)
                resp = self.conn.getresponse()
                resp.read()
                return resp.status
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt:
                    return -1
        return -1

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def run_scenario(port: int, bodies: list[bytes], rows: int, concurrency: int, duration: float, warmup: float,
                 headers: dict) -> dict:
    """`concurrency` threads post bodies back to back until the deadline; latencies after the warm-up count."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    count_from, stop_at = start + warmup, start + warmup + duration

    def worker(k: int) -> None:
        client = Client(port, headers)
        local, local_err, i = [], 0, k
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    break
                status = client.post(bodies[i % len(bodies)])
                t1 = time.perf_counter()
                i += concurrency
                if t0 >= count_from:
                    local.append(t1 - t0)
                    if status != 200:
                        local_err += 1
                        with lock:
                            statuses[status] = statuses.get(status, 0) + 1
        finally:
            client.close()
        with lock:
            latencies.extend(local)
            errors[0] += local_err

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup + duration + 60)
    elapsed = max(time.perf_counter() - count_from, 1e-9)
    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    n = len(latencies)
    return {"records_per_request": rows, "concurrency": concurrency, "seconds": round(elapsed, 2), "requests": n,
            "requests_per_s": round(n / elapsed, 1), "records_per_s": round(n * rows / elapsed, 1),
            "p50_ms": round(pct(0.50), 2), "p95_ms": round(pct(0.95), 2), "p99_ms": round(pct(0.99), 2),
            "errors": errors[0], "error_statuses": statuses}


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was healthy")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="bundle to serve (default: build a tiny demo bundle in a temp dir)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per scenario (default 20)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds per scenario not counted (default 1)")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--sizes", default="1,100", help="records per request, one scenario each (default 1,100)")
    ap.add_argument("--engine", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--threads", type=int, default=0, help="server intra-op threads (0: default)")
    ap.add_argument("--gzip", action="store_true", help="send the bodies gzip-compressed (Content-Encoding: gzip)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.concurrency < 1 or args.concurrency > 64:
        ap.error("--duration must be in (0, 600] and --concurrency in [1, 64]")
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="dlf-serve-load-") as tmp:
        bundle = args.bundle or build_demo_bundle(Path(tmp))
        pool = make_records(bundle, 2000)
        rng = random.Random(1)
        key = "load-test-key"
        headers = {"Content-Type": "application/json", "X-API-Key": key} | (
            {"Content-Encoding": "gzip"} if args.gzip else {})
        port = free_port()
        cmd = [sys.executable, "-m", "dlf", "serve", str(bundle), "--host", HOST, "--port", str(port),
               "--engine", args.engine, "--no-access-log", "--log-level", "warning",
               "--max-batch", str(max(sizes)), "--max-body-mb", "16"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = dict(os.environ, DLF_API_KEY=key)
        log = open(Path(tmp) / "server.log", "w+")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        results = {"bundle": str(bundle), "engine": args.engine, "concurrency": args.concurrency,
                   "duration_s": args.duration, "gzip": args.gzip, "cpu_count": os.cpu_count(), "scenarios": []}
        try:
            wait_healthy(port, proc, 120)
            results["rss_mib_start"] = round(rss_mib(proc.pid), 1)
            for size in sizes:
                bodies = [json.dumps(rng.sample(pool, size) if size <= len(pool) else
                                     [rng.choice(pool) for _ in range(size)]).encode() for _ in range(64)]
                if args.gzip:
                    bodies = [gzip.compress(b) for b in bodies]
                res = run_scenario(port, bodies, size, args.concurrency, args.duration, args.warmup, headers)
                res["rss_mib_after"] = round(rss_mib(proc.pid), 1)
                results["scenarios"].append(res)
            results["rss_mib_end"] = round(rss_mib(proc.pid), 1)
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} during the test")
        except (RuntimeError, KeyboardInterrupt) as exc:
            log.seek(0)
            tail = log.read()[-2000:]
            print(f"error: {exc}\n--- server log (tail) ---\n{tail}", file=sys.stderr)
            return 2
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

    print(f"dlf serve load test: {results['engine']} engine{', gzip bodies' if args.gzip else ''}, "
          f"{args.concurrency} concurrent clients, "
          f"{args.duration:g} s per scenario, {os.cpu_count()} CPUs, bundle {results['bundle']}")
    print("| records/request | requests/s | records/s | p50 ms | p95 ms | p99 ms | errors | RSS after (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["scenarios"]:
        print(f"| {r['records_per_request']} | {r['requests_per_s']} | {r['records_per_s']} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['rss_mib_after']} |")
    print(f"server RSS: {results['rss_mib_start']} MiB at start, {results['rss_mib_end']} MiB at the end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    total_errors = sum(r["errors"] for r in results["scenarios"])
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
