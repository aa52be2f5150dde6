"""Every registered model builds on the meta device (shapes and dtypes without memory) exactly as on CPU: bundles
compare a model built there with their weights file before building it for real (dlf.serve.bundle)."""
from dataclasses import replace

import pytest
import torch

from dlf.models import available_models, build_model, get_entry

DLF_VARIANTS = [dict(fusion_slots=0), dict(attention_heads=4, fusion_slots=2), dict(alpha=False, gate=False),
                dict(beta=False, gamma=False, fusion_slots=100)]


def _layout(tensors) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in tensors}


def _check(name, fm, cfg=None):
    with torch.device("meta"):
        meta = build_model(name, fm, cfg)
    cpu = build_model(name, fm, cfg)
    assert all(t.is_meta for t in meta.state_dict(keep_vars=True).values())
    assert _layout(meta.state_dict().items()) == _layout(cpu.state_dict().items())
    assert _layout(meta.named_buffers()) == _layout(cpu.named_buffers())  # non-persistent ones too


@pytest.mark.parametrize("name", available_models())
def test_every_registered_model_builds_on_meta_as_on_cpu(small_feature_map, name):
    _check(name, small_feature_map)


@pytest.mark.parametrize("variant", DLF_VARIANTS, ids=str)
def test_dlf_variants_build_on_meta_as_on_cpu(small_feature_map, variant):
    _check("dlf", small_feature_map, replace(get_entry("dlf").default_config(), **variant))
