"""benchmarks/gpu_check.sh runs once, unattended, on a machine lent with a GPU: what can be checked without one is
checked here (every command's flags, paths and the partial results a time limit leaves)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]

train_speed = load_benchmark("train_speed")

# Stands in for python in gpu_check.sh: pytest only collects; a benchmark script parses its arguments with its own
# parser and stops there (an unknown flag or bad value is argparse's error, exit 2)
STUB = """
import argparse, runpy, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["-m", "pytest"]:
    sys.exit(subprocess.run([sys.executable, *args, "--collect-only"]).returncode)
if args[0] == "-c":
    sys.exit(0)
parse = argparse.ArgumentParser.parse_args
def parse_and_stop(self, *a, **k):
    parse(self, *a, **k)
    print("arguments accepted:", args[0])
    sys.exit(0)
argparse.ArgumentParser.parse_args = parse_and_stop
sys.argv = args
runpy.run_path(args[0], run_name="__main__")
"""


def test_every_command_of_the_gpu_check_accepts_its_arguments(tmp_path):
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": f"{sys.executable} {stub}"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "tests.txt").read_text().strip() == "tests/test_cuda.py: 8"  # collected: every import resolves
    assert (out / "train_speed.txt").read_text() == "arguments accepted: benchmarks/train_speed.py\n"
    assert (out / "demo_bf16.txt").read_text() == "arguments accepted: benchmarks/bf16_accuracy.py\n"


def test_the_speed_json_keeps_the_configurations_that_finished(tmp_path, monkeypatch):
    """gpu_check.sh stops the benchmark at its time limit: the JSON was written at the end only, so nothing was kept."""
    monkeypatch.setattr(train_speed, "ensure_data", lambda *a: tmp_path)
    monkeypatch.setattr(train_speed, "matmul_peak", lambda *a, **k: 1.0)
    finished = []

    def run_child(job: dict) -> dict:
        if finished:
            raise KeyboardInterrupt  # the time limit, during the second configuration
        finished.append(job["model"])
        return {**job, "samples_per_s": 1.0, "peak_rss_gb": 1.0}

    monkeypatch.setattr(train_speed, "run_child", run_child)
    out = tmp_path / "speed.json"
    with pytest.raises(KeyboardInterrupt):
        train_speed.main(["--models", "lr,fm", "--batch-sizes", "64", "--precision", "fp32", "--json", str(out)])
    assert [r["model"] for r in json.loads(out.read_text())["results"]] == ["lr"]
