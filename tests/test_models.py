import itertools
import weakref
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import random_batch
from dlf.models import available_models, build_model, get_entry

TINY = dict(embedding_dim=8, layers=2, rank=3, interaction_tokens=3, implicit_tokens=2, hidden=16, attention_heads=2)
SWITCHES = [dict(alpha=a, beta=b, gamma=c, gate=g, fusion=f)
            for a, b, c, g, f in itertools.product([True, False], [True, False], [True, False], [True, False],
                                                  ["attention", "concat"]) if a or b or c]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_dlf_every_switch_combination_trains(small_feature_map, switches):
    torch.manual_seed(0)
    cfg = replace(get_entry("dlf").default_config(), **TINY, **switches)
    model = build_model("dlf", small_feature_map, cfg)
    batch = random_batch(small_feature_map, n=12)
    logits = model(batch)
    assert logits.shape == (12,)
    n_tokens = 3 * (switches["alpha"] + switches["beta"]) + 2 * switches["gamma"]
    assert model.layer_outputs(model.embedding(batch))[-1].shape == (12, n_tokens, 8)
    F.binary_cross_entropy_with_logits(logits, batch.label).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_switches_change_the_architecture(small_feature_map):
    base = replace(get_entry("dlf").default_config(), **TINY)
    names = lambda **kw: set(build_model("dlf", small_feature_map, replace(base, **kw)).state_dict())  # noqa: E731
    full = names()
    assert any(".fusion." in n for n in full) and any(".gate." in n for n in full)
    assert not any(".fusion." in n for n in names(fusion="concat"))
    assert not any(".gate." in n for n in names(gate=False))
    assert not any(".fmb_x0." in n for n in names(alpha=False))
    assert not any(".fmb." in n for n in names(beta=False))
    assert not any(".lcb." in n for n in names(gamma=False))


def test_all_branches_off_is_rejected(small_feature_map):
    cfg = replace(get_entry("dlf").default_config(), alpha=False, beta=False, gamma=False)
    with pytest.raises(ValueError, match="at least one"):
        build_model("dlf", small_feature_map, cfg)


def test_defaults_are_the_authors():
    cfg = get_entry("dlf").default_config()
    assert (cfg.embedding_dim, cfg.layers, cfg.rank, cfg.interaction_tokens, cfg.implicit_tokens, cfg.hidden) == \
        (64, 3, 24, 32, 32, 512)
    assert (cfg.fusion, cfg.gate) == ("attention", True)
    ref = get_entry("dlf_concat").default_config()
    assert (ref.fusion, ref.gate) == ("concat", False)


@pytest.mark.parametrize("name", available_models())
def test_every_registered_model_overfits_a_tiny_batch(small_feature_map, name):
    torch.manual_seed(0)
    cfg = get_entry(name).default_config()
    if name.startswith("dlf"):
        cfg = replace(cfg, **TINY)
    model = build_model(name, small_feature_map, cfg)
    batch = random_batch(small_feature_map, n=32, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)  # (at 0.05 FinalMLP diverged on some CPUs)
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first


def test_naf_slots_summarise_their_own_branch_only():
    from dlf.models.dlf import NetworkAwareFusion
    torch.manual_seed(0)
    naf = NetworkAwareFusion([3, 3, 2], dim=8, heads=2, slots=2)  # m_b = 2, 2, 2 slots
    z = torch.randn(5, 8, 8)
    with torch.no_grad():
        naf.pool.add_(torch.randn_like(naf.pool))  # any weights, also off the diagonal blocks
    out = naf(z)
    z2 = z.clone()
    z2[:, 6:] += 10.0  # change only the last branch's tokens
    s = lambda x: torch.einsum("ns,bnd->bsd", naf.pool * naf.pool_mask, x)  # noqa: E731  S = P^T Z
    assert torch.equal(s(z)[:, :4], s(z2)[:, :4]) and not torch.allclose(s(z)[:, 4:], s(z2)[:, 4:])
    out.sum().backward()
    assert (naf.pool.grad * (1 - naf.pool_mask)).abs().max() == 0  # off-block weights get no gradient
    full = NetworkAwareFusion([3, 3, 2], dim=8, heads=2, slots=0)  # every token is a key
    assert full(z).shape == z.shape and not hasattr(full, "pool")
    # a branch with fewer tokens than slots gets one slot per token, initialised to the identity
    small = NetworkAwareFusion([3, 1], dim=8, heads=1, slots=2)
    assert small.pool.shape == (4, 3) and torch.equal(small.pool[3], torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("heads, slots", [(1, 2), (2, 2), (4, 0)])
def test_naf_computes_its_equation_per_head(heads, slots):
    """NAF(Z) = Z + concat_j softmax(Q_j K_j^T / sqrt(d_h)) S_j, K = S + T[branch], written one head at a time."""
    from dlf.models.dlf import NetworkAwareFusion
    torch.manual_seed(0)
    naf = NetworkAwareFusion([3, 3, 2], dim=8, heads=heads, slots=slots)
    z = torch.randn(5, 8, 8)
    s = torch.einsum("ns,bnd->bsd", naf.pool * naf.pool_mask, z) if slots else z
    k = s + naf.branch_embedding[naf.key_branch]
    dh = 8 // heads
    cols = [slice(j * dh, (j + 1) * dh) for j in range(heads)]
    expected = z + torch.cat([torch.softmax(naf.query[:, c] @ k[:, :, c].transpose(1, 2) / dh ** 0.5, -1) @ s[:, :, c]
                              for c in cols], dim=-1)
    torch.testing.assert_close(naf(z), expected, rtol=1e-5, atol=1e-6)


def test_checkpoint_layers_gives_the_same_gradients(small_feature_map):
    torch.manual_seed(0)
    batch = random_batch(small_feature_map, 32)
    grads, saved, stats = [], [], []
    for recompute in (False, True):
        cfg = replace(get_entry("dlf").default_config(), embedding_dim=8, layers=2, rank=3, interaction_tokens=4,
                      implicit_tokens=4, hidden=16, dropout=0.2, checkpoint_layers=recompute)
        torch.manual_seed(1)
        model = build_model("dlf", small_feature_map, cfg).train()
        torch.manual_seed(2)  # same dropout masks: checkpointing replays the RNG state in the recomputation
        storages = {}

        def keep(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            logits = model(batch)
        saved.append(sum(storages.values()))  # activation bytes kept for the backward pass
        F.binary_cross_entropy_with_logits(logits, batch.label).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        stats.append({k: v for k, v in model.state_dict().items() if ".mlp.1." in k})  # the branches' BatchNorms
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0
    assert saved[1] < 0.6 * saved[0]
    # the recomputation must not update BatchNorm's running statistics a second time (they were: momentum applied
    # twice and num_batches_tracked 2 per step, so scoring after training with checkpoint_layers=true differed)
    assert stats[0].keys() == stats[1].keys() and any(k.endswith("running_mean") for k in stats[0])
    for k in stats[0]:
        torch.testing.assert_close(stats[0][k], stats[1][k], msg=k)


@pytest.mark.parametrize("name", ["dlf", "dlf_concat"])
def test_scoring_forward_matches_training_forward_and_frees_earlier_layers(small_feature_map, name):
    # the no-grad path adds in place and keeps only the newest layer output: same numbers, less memory
    torch.manual_seed(0)
    cfg = replace(get_entry(name).default_config(), embedding_dim=8, layers=3, rank=3, interaction_tokens=4,
                  implicit_tokens=4, hidden=16)
    model = build_model(name, small_feature_map, cfg).eval()
    batch = random_batch(small_feature_map, 32)
    with torch.no_grad():
        outs = model.layer_outputs(model.embedding(batch))
    alive = []  # (layer index, weak reference to its output), checked as each later layer starts
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: alive.append((k, weakref.ref(o))))
             for k, layer in enumerate(model.layers)]
    hooks.append(model.layers[-1].register_forward_pre_hook(
        lambda m, i: alive.append(("last starts", [k for k, ref in alive if ref() is not None]))))
    with torch.inference_mode():
        scored = model(batch)
    for h in hooks:
        h.remove()
    assert ("last starts", [len(model.layers) - 2]) in alive  # only the last layer's input still exists
    grad_outs = model.layer_outputs(model.embedding(batch))
    for a, b in zip(outs, grad_outs):
        torch.testing.assert_close(a, b.detach())
    torch.testing.assert_close(scored, model(batch).detach())


def test_residual_gate_backward_matches_autograd_of_the_plain_formula():
    from dlf.models.dlf import ResidualGate, _GateProduct
    torch.manual_seed(0)
    x = torch.randn(4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_GateProduct.apply, (x, w, b))
    gate = ResidualGate(5, 6).double()
    with torch.no_grad():
        gate.weight.copy_(w)
        gate.bias.copy_(b)
    xs = x.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous input, as a sliced residual
    out, ref = gate(xs), torch.sigmoid((xs @ w).unsqueeze(-1) + b) * xs
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, gate.weight, gate.bias), grad)
    want = torch.autograd.grad(ref, (x, w, b), grad)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)
    with torch.no_grad():  # inference takes the plain path: the same values
        torch.testing.assert_close(gate(xs), ref.detach())


def test_dlf_keeps_only_what_its_backward_pass_needs(small_feature_map):
    """No saved tensor keeps a result alive that the backward pass does not read: the [W_D | R]^T E product is not
    kept by a slice of a larger stacked product (concat mode), and NAF keeps S but no S + T[branch] copy of it."""
    b, d, r, n_f, n_l, slots = 16, 8, 3, 5, 4, 3
    cfg = dict(embedding_dim=d, layers=1, rank=r, interaction_tokens=n_f, implicit_tokens=n_l, hidden=16,
               fusion_slots=slots)
    n = 2 * n_f + n_l

    def saved_sizes(name: str) -> list[int]:  # nbytes of each distinct storage autograd keeps, fp32
        torch.manual_seed(0)
        model = build_model(name, small_feature_map, replace(get_entry(name).default_config(), **cfg)).train()
        storages = {}

        def keep(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            model(random_batch(small_feature_map, b))
        return list(storages.values())

    concat = saved_sizes("dlf_concat")
    assert b * 2 * r * d * 4 in concat  # [W_C | W_L]^T E, read by the two s products
    assert b * (2 * r + n_l + n) * d * 4 not in concat and b * (n_l + n) * d * 4 not in concat
    assert saved_sizes("dlf").count(b * 3 * slots * d * 4) == 1  # S (B x 3m x d), once


@pytest.mark.parametrize("heads", [0, -2])
def test_non_positive_attention_heads_is_a_config_error(heads):
    from dlf.config import ConfigError, load_config

    # the divisibility check ran first: embedding_dim % 0 was a ZeroDivisionError traceback
    with pytest.raises(ConfigError, match=f"model.attention_heads must be >= 1, got {heads}"):
        load_config(None, [f"model.attention_heads={heads}"], model="dlf")


def test_raw_matrices_have_the_released_kaiming_uniform_init(small_feature_map):
    # The released code initialises W_C, W_L, W_D, P and R with nn.init.kaiming_uniform_(w) at its default a=0:
    # U(-b, b), b = sqrt(6 / fan_in), fan_in = w.shape[1]. nn.Linear's a=sqrt(5) gives b = sqrt(1 / fan_in), 2.4x less.
    torch.manual_seed(0)
    model = build_model("dlf", small_feature_map, get_entry("dlf").default_config())
    raw = {name: w for name, w in model.named_parameters()
           if name.startswith("layers.") and name.split(".")[-2] in ("fmb", "fmb_x0", "lcb", "residual_projection",
                                                                      "x0_change_projection")}
    assert {name.split(".")[-2] for name in raw} == {"fmb", "fmb_x0", "lcb", "residual_projection",
                                                     "x0_change_projection"}
    for name, w in raw.items():
        bound = (6 / w.shape[1]) ** 0.5
        assert bound / 2 < w.abs().max() <= bound, name
