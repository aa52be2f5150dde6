import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from dlf.data import Batch, FeatureMap, FieldSpec

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def small_feature_map() -> FeatureMap:
    return FeatureMap([
        FieldSpec("c1", "categorical", vocab_size=7),
        FieldSpec("c2", "categorical", vocab_size=11),
        FieldSpec("n1", "numeric"),
        FieldSpec("n2", "numeric"),
        FieldSpec("tags", "multi", vocab_size=9, max_len=4),
    ])


def random_batch(fm: FeatureMap, n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(2, f.vocab_size, (n,), generator=g) for f in fm.of_kind("categorical")], 1)
    num = torch.randn(n, len(fm.of_kind("numeric")), generator=g)
    multi_fields = fm.of_kind("multi")
    multi = torch.zeros(n, len(multi_fields), max((f.max_len for f in multi_fields), default=1), dtype=torch.int64)
    for j, f in enumerate(multi_fields):
        ids = torch.randint(2, f.vocab_size, (n, f.max_len), generator=g)
        lengths = torch.randint(1, f.max_len + 1, (n, 1), generator=g)
        multi[:, j, : f.max_len] = torch.where(torch.arange(f.max_len) < lengths, ids, 0)
    label = torch.randint(0, 2, (n,), generator=g).float()
    return Batch(cat, num, multi, label)


@pytest.fixture
def dead_pid() -> str:
    """The pid of a process that has exited: folders named after it are a dead run's leftovers."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
