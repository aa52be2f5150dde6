"""ONNX export: ONNX Runtime matches PyTorch to 1e-5 for DLF (attention and concat fusion) and LR,
at several batch sizes (the batch axis is dynamic)."""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from conftest import random_batch  # noqa: E402
from dlf.models import available_models, build_model, get_entry  # noqa: E402
from dlf.serve.onnx import OnnxRunner, ProbabilityModel, export_onnx  # noqa: E402

TINY = dict(embedding_dim=8, layers=2, rank=3, interaction_tokens=3, implicit_tokens=2, hidden=16, attention_heads=2)


@pytest.mark.parametrize("name,overrides", [("dlf", TINY), ("dlf", {**TINY, "attention_heads": 1}),  # the default
                                            ("dlf_concat", TINY), ("lr", {})])
def test_onnx_matches_pytorch(name, overrides, small_feature_map, tmp_path):
    import dataclasses
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_entry(name).default_config(), **overrides)
    model = build_model(name, small_feature_map, cfg).eval()
    with torch.no_grad():  # weights of a trained size, not the 1e-4 initial embeddings (which make a constant)
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    info = export_onnx(model, small_feature_map, tmp_path / "m.onnx")
    assert info["inputs"] == ["categorical", "numeric", "multi"] and info["opset"] == 17
    runner = OnnxRunner(tmp_path / "m.onnx")
    wrapper = ProbabilityModel(model).eval()
    for n, seed in ((1, 1), (7, 2), (300, 3)):
        b = random_batch(small_feature_map, n, seed)
        b.multi[0, 0, :] = 0  # an empty list
        b.categorical[-1, 0] = 1  # OOV
        with torch.no_grad():
            want = wrapper(b.categorical, b.numeric, b.multi).numpy()
        got = runner.run(b)
        assert got.shape == (n,)
        assert want.std() > 1e-3 or n == 1  # the outputs do vary with the input
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", [m for m in available_models() if m not in ("dlf", "dlf_concat", "lr")])
def test_onnx_matches_pytorch_for_every_zoo_model(name, small_feature_map, tmp_path):
    """`dlf export --format onnx` works for any registered model: the zoo at a small size, trained-scale weights,
    with OOV ids, an empty multi-valued list and batch sizes 1 and 7."""
    import dataclasses
    torch.manual_seed(0)
    cfg = get_entry(name).default_config()
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("embedding_dim", 8), ("hidden_units", (16, 16)))
                                      if hasattr(cfg, k)})
    model = build_model(name, small_feature_map, cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    export_onnx(model, small_feature_map, tmp_path / "m.onnx")
    runner = OnnxRunner(tmp_path / "m.onnx")
    wrapper = ProbabilityModel(model).eval()
    for n, seed in ((1, 1), (7, 2)):
        b = random_batch(small_feature_map, n, seed)
        b.multi[0, 0, :] = 0
        b.categorical[-1, 0] = 1
        with torch.no_grad():
            want = wrapper(b.categorical, b.numeric, b.multi).numpy()
        np.testing.assert_allclose(runner.run(b), want, rtol=0, atol=5e-5)


def test_a_model_onnx_that_does_not_fit_the_feature_map_is_one_line(small_feature_map, tmp_path):
    """A model.onnx of another model (or not ONNX at all) was an ONNX Runtime traceback: InvalidArgument 'Got invalid
    dimensions for input: numeric' at the first batch, InvalidProtobuf at loading. Now a BundleError when loading."""
    import dataclasses

    from dlf.data import FeatureMap
    from dlf.serve.bundle import BundleError

    model = build_model("lr", small_feature_map).eval()
    export_onnx(model, small_feature_map, tmp_path / "m.onnx")
    OnnxRunner(tmp_path / "m.onnx", fm=small_feature_map)  # its own feature map fits
    fewer = FeatureMap([f for f in small_feature_map.fields if f.name != "n2"])
    longer = FeatureMap([dataclasses.replace(f, max_len=6) if f.kind == "multi" else f
                         for f in small_feature_map.fields])
    with pytest.raises(BundleError, match=r"m\.onnx: graph input 'numeric' of shape \['batch', 2\] does not fit the "
                                          r"bundle's feature map \(per row: categorical \[2\], numeric \[1\], multi "
                                          r"\[1, 4\]\); model\.onnx is another model's"):
        OnnxRunner(tmp_path / "m.onnx", fm=fewer)
    with pytest.raises(BundleError, match=r"graph input 'multi' of shape \['batch', 1, 4\] does not fit"):
        OnnxRunner(tmp_path / "m.onnx", fm=longer)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"bad\.onnx: ONNX Runtime cannot load it: .*INVALID_PROTOBUF"):
        OnnxRunner(tmp_path / "bad.onnx")
