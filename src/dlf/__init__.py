"""dlf: CTR prediction built around DLF (SIGIR 2025)."""
import importlib

__version__ = "0.1.0"

# imported on first use: most import torch (~3 s), which the data commands (dlf preprocess, download) never need.
# The Python API of each command, and the errors they raise (one line each, as the CLI prints them).
_LAZY = {"train": "dlf.api", "load_config": "dlf.config", "RunConfig": "dlf.config",
         "preprocess": "dlf.data.preprocess", "export_bundle": "dlf.serve.bundle", "load_bundle": "dlf.serve.bundle",
         "load_run_model": "dlf.serve.bundle",
         "predict_file": "dlf.serve.predict", "predict_records": "dlf.serve.predict",
         "evaluate_file": "dlf.serve.evaluate",
         "ConfigError": "dlf.config", "DataError": "dlf.data.schema", "TrainingError": "dlf.train.trainer",
         "BundleError": "dlf.serve.bundle"}

__all__ = [*_LAZY, "__version__"]

# `dlf.train` names both a subpackage and the function: load the subpackage now (its __init__ is empty) and drop
# the attribute that binds, so that importing dlf.train.* later leaves the name to the function
importlib.import_module("dlf.train")
del train  # noqa: F821


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dlf' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    # the lazy names too: a notebook's `dlf.<Tab>` (which lists dir(dlf)) offered none of them
    return sorted(set(globals()) | set(__all__))
