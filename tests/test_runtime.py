"""dlf._runtime: which malloc the process runs on (the glibc tuning is skipped under TCMalloc/jemalloc), and the
CLI's restart on TCMalloc when it is installed."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dlf._runtime import find_tcmalloc

PROBE = "from dlf._runtime import malloc_library; print(malloc_library())"
TCMALLOC = find_tcmalloc()


def probe(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_default_malloc_is_reported():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert probe(env) == "default"


@pytest.mark.skipif(TCMALLOC is None, reason="no TCMalloc library installed")
def test_preloaded_tcmalloc_is_detected():
    assert probe(os.environ | {"LD_PRELOAD": TCMALLOC}) == "tcmalloc"


def train_malloc(tmp_path, env: dict) -> str:
    """The allocator `python -m dlf train` ran on, as its run directory records it."""
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    subprocess.run([sys.executable, "-m", "dlf", "train", "--model", "lr", "--out", str(out), "--quiet",
                    "--set", "data.synthetic.rows=5000", "--set", "train.epochs=1"], env=env, check=True,
                   capture_output=True)
    return json.loads((out / "environment.json").read_text())["malloc"]


def test_cli_restarts_on_installed_tcmalloc_unless_disabled(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "DLF_TCMALLOC", "_DLF_TCMALLOC_TRIED")}
    assert TCMALLOC is None or os.path.isfile(TCMALLOC)
    assert train_malloc(tmp_path, env) == ("tcmalloc" if TCMALLOC else "default")
    assert train_malloc(tmp_path, env | {"DLF_TCMALLOC": "0"}) == "default"


def test_json_files_are_strict_json_with_undefined_numbers_as_null(tmp_path):
    import json
    import math

    from dlf._io import atomic_write_json
    atomic_write_json(tmp_path / "m.json", {"test": {"auc": math.nan, "logloss": 0.5}, "history": [math.inf, 1.0]})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"test": {"auc": None, "logloss": 0.5}, "history": [None, 1.0]}


ORPHAN = """
import ctypes, os, sys, time
from dlf._runtime import interrupt_when_orphaned

with interrupt_when_orphaned(poll_s=0.05, grace_s=1):
    print("watching", flush=True)
    try:
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:
        with open(sys.argv[1], "w") as fh:
            fh.write("interrupted")
        ctypes.PyDLL(None).sleep(60)  # blocked with the GIL held, as a rank deadlocked in gloo's teardown
"""

# starts the orphan-to-be, waits until it watches its parent, prints its id and exits (which orphans it)
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid)
"""


def _running(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody has reaped yet has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_orphan_is_interrupted_and_ended_if_it_does_not_stop(tmp_path):
    """A torchrun rank whose torchrun was SIGKILLed (with the launcher's process group) trained on, orphaned; one
    interrupted while a peer waits on it can deadlock in gloo's teardown with the GIL held, and never end."""
    mark = tmp_path / "mark"
    pid = int(subprocess.run([sys.executable, "-c", PARENT, ORPHAN, str(mark)], capture_output=True, text=True,
                             check=True, timeout=60).stdout)
    try:
        deadline = time.monotonic() + 15
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid) and mark.read_text() == "interrupted"
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
