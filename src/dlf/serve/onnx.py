"""ONNX export of the whole model: encoded ids / numeric values -> click probability.

Graph inputs (batch axis dynamic, named "batch"; only the kinds the model has):
    categorical  int64   B x F_cat     ids as in dlf.data.features (0 pad, 1 OOV, 2 missing, ...)
    numeric      float32 B x F_num     transformed values (missing -> 0)
    multi        int64   B x F_multi x L
Output:
    probability  float32 B

The raw-value preprocessing (vocabulary lookups, transforms) stays in Python
(dlf.serve.encoding), shared by both engines, so `dlf predict --engine onnx` and the torch
engine see the same ids. Exported with torch's TorchScript-based exporter (opset 17), which
needs neither onnxscript nor a network; ONNX Runtime runs the result (the `[serve]` extra).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap

KINDS = ("categorical", "numeric", "multi")


class ProbabilityModel(nn.Module):
    """model(Batch) -> sigmoid(logit), with the Batch's tensors as plain inputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
        label = numeric.new_zeros(categorical.shape[0])  # not read by any model
        return torch.sigmoid(self.model(Batch(categorical, numeric, multi, label)).float())


def _example(fm: FeatureMap, n: int = 3) -> Batch:
    g = torch.Generator().manual_seed(0)
    cat = [f.vocab_size for f in fm.of_kind("categorical")]
    multi = fm.of_kind("multi")
    max_len = max([f.max_len for f in multi], default=1) if multi else 1
    c = torch.stack([torch.randint(0, max(v, 1), (n,), generator=g) for v in cat], 1) if cat else \
        torch.zeros(n, 0, dtype=torch.int64)
    x = torch.randn(n, len(fm.of_kind("numeric")), generator=g)
    m = torch.zeros(n, len(multi), max_len, dtype=torch.int64)
    for j, f in enumerate(multi):
        m[:, j, :f.max_len] = torch.randint(0, f.vocab_size, (n, f.max_len), generator=g)
    return Batch(c, x, m, torch.zeros(n))


def input_kinds(fm: FeatureMap) -> list[str]:
    return [k for k in KINDS if fm.of_kind(k)]


def export_onnx(model: nn.Module, fm: FeatureMap, path: str | Path, opset: int = 17, check: bool = True) -> dict:
    """Write model.onnx; returns its description for the bundle manifest. With check, ONNX Runtime's
    output on a small batch is compared with PyTorch's (a mismatch raises)."""
    from dlf.serve.bundle import BundleError

    if not input_kinds(fm):
        raise BundleError("the model has no input fields; nothing to export")
    model = model.eval()
    wrapper = ProbabilityModel(model).eval()
    ex = _example(fm)
    args = (ex.categorical, ex.numeric, ex.multi)
    names = list(KINDS)
    dynamic = {k: {0: "batch"} for k in names} | {"probability": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["probability"],
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True)
        except Exception as exc:  # the exporter raises many kinds; one line for the user
            raise BundleError(f"ONNX export of {type(model).__name__} failed: {str(exc).splitlines()[0]}") from None
    info = {"file": Path(path).name, "opset": opset, "inputs": input_kinds(fm), "output": "probability",
            "exporter": f"torch {torch.__version__.split('+')[0]} (TorchScript-based)"}
    if check:
        session = OnnxRunner(path, fm=fm)
        big = _example(fm, 17)
        with torch.no_grad():
            want = wrapper(big.categorical, big.numeric, big.multi).numpy()
        got = session.run(big)
        err = float(np.max(np.abs(got - want)))
        if not err <= 1e-4:
            raise BundleError(f"ONNX Runtime output differs from PyTorch by {err:.2e} on a test batch")
        info["max_abs_diff_at_export"] = err
    return info


def _row_shapes(fm: FeatureMap) -> dict[str, list[int]]:
    """Each graph input's shape per row (without the batch axis) for the model of `fm`."""
    multi = fm.of_kind("multi")
    return {"categorical": [len(fm.of_kind("categorical"))], "numeric": [len(fm.of_kind("numeric"))],
            "multi": [len(multi), max([f.max_len for f in multi], default=1)]}


class OnnxRunner:
    """An ONNX Runtime session over model.onnx: Batch -> probabilities (numpy float32).

    With `fm`, the graph's inputs are checked against the feature map's field counts when loading, so that a
    model.onnx of another model is one BundleError then, not an ONNX Runtime error at the first batch."""

    def __init__(self, path: str | Path, threads: int = 0, fm: FeatureMap | None = None):
        from dlf.serve.bundle import BundleError

        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError("ONNX Runtime is not installed: pip install 'dlf[serve]' (or onnxruntime)") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
            raise BundleError(f"{path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        if fm is not None:
            want = _row_shapes(fm)
            for i in self.session.get_inputs():
                if i.name not in want or list(i.shape[1:]) != want[i.name]:
                    expected = ", ".join(f"{k} {want[k]}" for k in input_kinds(fm))
                    raise BundleError(f"{path}: graph input {i.name!r} of shape {i.shape} does not fit the bundle's "
                                      f"feature map (per row: {expected}); model.onnx is another model's")

    def run(self, batch: Batch) -> np.ndarray:
        feeds = {"categorical": batch.categorical.numpy().astype(np.int64, copy=False),
                 "numeric": batch.numeric.numpy().astype(np.float32, copy=False),
                 "multi": batch.multi.numpy().astype(np.int64, copy=False)}
        out = self.session.run(["probability"], {k: feeds[k] for k in self.inputs})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)
