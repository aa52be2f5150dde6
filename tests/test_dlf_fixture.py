"""fusion="concat" reproduces the authors' released computation on the shared reference numbers."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import FIXTURES, SHARED
from dlf.data import FeatureMap, FieldSpec
from dlf.models import build_model, get_entry


@pytest.mark.parametrize("grad", [False, True], ids=["scoring", "training-path"])  # two code paths (in-place add)
def test_concat_mode_matches_reference_layer_by_layer(grad):
    ref = np.load(FIXTURES / "dlf_reference_eval.npz", allow_pickle=False)
    fm = FeatureMap([FieldSpec(f"n{i}", "numeric") for i in range(5)])  # F = 5; the fixture starts at E1
    cfg = replace(get_entry("dlf_concat").default_config(), embedding_dim=8, layers=3, rank=2,
                  interaction_tokens=3, implicit_tokens=4, hidden=16)
    model = build_model("dlf_concat", fm, cfg).eval()

    params = {k.removeprefix("param."): torch.from_numpy(ref[k]) for k in ref.files if k.startswith("param.")}
    ours = {k for k in model.state_dict() if not k.startswith("embedding.") and not k.endswith("num_batches_tracked")}
    assert ours == set(params), "parameter names/layout must match the released code exactly"
    model.load_state_dict(params, strict=False)

    with torch.set_grad_enabled(grad):
        outs = model.layer_outputs(torch.from_numpy(ref["input.x0"]))
        logit = model.head_logit(outs[-1])
    assert len(outs) == 3
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out.detach().numpy(), ref[f"output.layer{i}"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(logit.detach().numpy(), ref["output.logit"][:, 0], atol=1e-5, rtol=0)


SHARED_REFERENCE = SHARED / "fixtures" / "dlf_reference_eval.npz"


@pytest.mark.skipif(not SHARED_REFERENCE.exists(), reason=f"{SHARED_REFERENCE} not present")
def test_reference_copy_is_the_shared_fixture():
    # the parity test above reads the repo's copy (CI has no ../shared); it must be the shared reference byte for byte
    assert (FIXTURES / "dlf_reference_eval.npz").read_bytes() == SHARED_REFERENCE.read_bytes()
