"""dlf._runtime: which malloc the process runs on (the glibc tuning is skipped under TCMalloc/jemalloc)."""
import glob
import os
import subprocess
import sys

import pytest

PROBE = "from dlf._runtime import malloc_library; print(malloc_library())"
TCMALLOC = sorted(glob.glob("/usr/lib/*/libtcmalloc*.so*") + glob.glob("/usr/lib/libtcmalloc*.so*"))


def probe(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_default_malloc_is_reported():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert probe(env) == "default"


@pytest.mark.skipif(not TCMALLOC or not sys.platform.startswith("linux"), reason="no TCMalloc library installed")
def test_preloaded_tcmalloc_is_detected():
    assert probe(os.environ | {"LD_PRELOAD": TCMALLOC[0]}) == "tcmalloc"
