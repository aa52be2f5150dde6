"""The baseline zoo: shapes, gradients, a tiny overfit at small sizes, and one wiring check per model.

The parametrised overfit test in test_models.py runs every model at its (paper / BARS) defaults; here the same
models run at the small sizes in TINY so that every option (stacked/parallel, mixture, 1B/2B, ...) is cheap.
"""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import random_batch
from dlf.data import Batch
from dlf.models import available_models, build_model, get_entry
from dlf.models.autoint import InteractingLayer
from dlf.models.dcn import CrossLayerV1
from dlf.models.dcnv2 import CrossLayerV2, LowRankMixtureCrossLayer
from dlf.models.embedding import FieldEmbedding
from dlf.models.finalmlp import BilinearFusion
from dlf.models.finalnet import FactorizedInteraction, FieldGate
from dlf.models.fm import fm_pairwise
from dlf.models.gdcn import GatedCrossLayer
from dlf.models.xdeepfm import CINLayer

ZOO = ["fm", "dnn", "deepfm", "dcn", "dcnv2", "autoint", "xdeepfm", "finalmlp", "gdcn", "wukong", "finalnet"]

# Small sizes for the tiny feature map (5 fields); every other setting stays at the model's default.
TINY = {
    "fm": dict(embedding_dim=4),
    "dnn": dict(embedding_dim=4, hidden_units=(16, 8)),
    "deepfm": dict(embedding_dim=4, hidden_units=(16, 8)),
    "dcn": dict(embedding_dim=4, cross_layers=2, hidden_units=(16,)),
    "dcnv2": dict(embedding_dim=4, cross_layers=2, hidden_units=(16,), low_rank=3, experts=2),
    "autoint": dict(embedding_dim=4, attention_layers=2, attention_dim=8, hidden_units=(16,)),
    "xdeepfm": dict(embedding_dim=4, cin_units=(3, 2), hidden_units=(16,)),
    "finalmlp": dict(embedding_dim=4, mlp1_hidden_units=(16, 8), mlp2_hidden_units=(12, 6), fs_hidden_units=(8,)),
    "gdcn": dict(embedding_dim=4, cross_layers=2, hidden_units=(16,)),
    "wukong": dict(embedding_dim=4, layers=2, rank=3, fmb_tokens=4, lcb_tokens=3, hidden=16),
    "finalnet": dict(embedding_dim=4, block1_hidden_units=(8, 8), block2_hidden_units=(8, 6)),
}

# Each model at its tiny size, plus the options that change the wiring.
VARIANTS = [(name, {}) for name in ZOO] + [
    ("dcnv2", dict(structure="stacked")),
    ("dcnv2", dict(structure="crossnet_only")),
    ("dcnv2", dict(low_rank_mixture=True)),
    ("dcnv2", dict(low_rank_mixture=True, structure="stacked")),
    ("autoint", dict(use_scale=True)),
    ("finalmlp", dict(feature_selection=False)),
    ("gdcn", dict(structure="stacked")),
    ("finalnet", dict(block_type="1B")),
    ("finalnet", dict(residual_type="sum", field_gate=False)),
]
VARIANT_IDS = [name + "".join(f"-{k}={v}" for k, v in extra.items()) for name, extra in VARIANTS]


def tiny_config(name: str, **extra):
    return replace(get_entry(name).default_config(), **{**TINY[name], **extra})


def tiny_model(name: str, fm, **extra) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, fm, tiny_config(name, **extra))


def spread_embeddings(model: nn.Module, std: float = 0.5) -> None:
    """Wider embeddings than the 1e-4 init, so that wiring checks compare values well above float noise."""
    for module in model.modules():
        if isinstance(module, FieldEmbedding):
            nn.init.normal_(module.table, std=std)
            nn.init.normal_(module.numeric_weight, std=std)


def test_every_zoo_model_is_registered():
    assert set(ZOO) <= set(available_models())
    for name in ZOO:
        cfg = get_entry(name).default_config()
        cfg.validate()
        if hasattr(cfg, "embedding_dim") and name != "wukong":
            assert cfg.embedding_dim == 16  # BARS' size; WuKong follows the DLF authors' 64


@pytest.mark.parametrize("name,extra", VARIANTS, ids=VARIANT_IDS)
def test_shape_and_gradients_reach_every_parameter(small_feature_map, name, extra):
    model = tiny_model(name, small_feature_map, **extra)
    batch = random_batch(small_feature_map, n=12)
    logits = model(batch)
    assert logits.shape == (12,) and torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, batch.label).backward()
    assert model.embedding.table.grad is not None and model.embedding.table.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name,extra", VARIANTS, ids=VARIANT_IDS)
def test_overfits_a_tiny_batch_at_small_size(small_feature_map, name, extra):
    model = tiny_model(name, small_feature_map, **extra)
    batch = random_batch(small_feature_map, n=32, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def _changed_field(batch: Batch, kind: str, j: int) -> Batch:
    cat, num, multi = batch.categorical.clone(), batch.numeric.clone(), batch.multi.clone()
    if kind == "categorical":
        cat[:, j] = torch.where(cat[:, j] == 2, 3, 2)
    elif kind == "numeric":
        num[:, j] = num[:, j] + 1.0
    else:
        multi[:, j, 0] = torch.where(multi[:, j, 0] == 2, 3, 2)
    return Batch(cat, num, multi, batch.label)


@pytest.mark.parametrize("name", ZOO)
def test_every_field_reaches_the_logit(small_feature_map, name):
    model = tiny_model(name, small_feature_map)
    spread_embeddings(model)
    model.eval()
    batch = random_batch(small_feature_map, n=8)
    with torch.no_grad():
        base = model(batch)
        for kind in ("categorical", "numeric", "multi"):
            for j in range(len(small_feature_map.of_kind(kind))):
                assert not torch.allclose(model(_changed_field(batch, kind, j)), base), f"{kind} field {j}"


# ----- one wiring check per model -----

def test_fm_pairwise_term_is_the_explicit_sum_over_pairs(small_feature_map):
    e = torch.randn(3, 5, 4, dtype=torch.float64)
    explicit = sum((e[:, i] * e[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    assert torch.allclose(fm_pairwise(e), explicit)
    model = tiny_model("fm", small_feature_map)
    spread_embeddings(model)
    batch = random_batch(small_feature_map, n=6)
    tokens = model.embedding(batch)
    pairs = sum((tokens[:, i] * tokens[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    first_order = model.linear.embedding(batch).sum(dim=(1, 2)) + model.linear.bias
    assert torch.allclose(model(batch), first_order + pairs, atol=1e-5)


def test_dnn_models_interactions_that_a_linear_model_cannot(small_feature_map):
    # f(a, b) - f(a', b) != f(a, b') - f(a', b') for two categorical fields: the MLP is not additive over fields.
    model = tiny_model("dnn", small_feature_map)
    spread_embeddings(model)
    model.eval()
    batch = random_batch(small_feature_map, n=1)

    def logit(a: int, b: int) -> float:
        cat = batch.categorical.clone()
        cat[0, 0], cat[0, 1] = a, b
        return model(Batch(cat, batch.numeric, batch.multi, batch.label)).item()

    with torch.no_grad():
        assert abs((logit(2, 2) - logit(3, 2)) - (logit(2, 3) - logit(3, 3))) > 1e-4


def test_deepfm_is_fm_plus_dnn_on_one_embedding(small_feature_map):
    deepfm = tiny_model("deepfm", small_feature_map)
    spread_embeddings(deepfm)
    fm = build_model("fm", small_feature_map, tiny_config("fm"))
    fm.load_state_dict({k: v for k, v in deepfm.state_dict().items() if not k.startswith("dnn.")})
    batch = random_batch(small_feature_map, n=6)
    deepfm.eval()
    with torch.no_grad():
        dnn_part = deepfm.dnn(deepfm.embedding(batch).flatten(1)).squeeze(-1)
        assert dnn_part.abs().max() > 1e-3
        assert torch.allclose(deepfm(batch), fm(batch) + dnn_part, atol=1e-5)


def test_dcn_cross_layer_formula():
    torch.manual_seed(0)
    layer = CrossLayerV1(6)
    nn.init.normal_(layer.bias)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    w = layer.weight.weight.view(6)
    expected = x0 * (x @ w).unsqueeze(1) + layer.bias + x  # x_0 (x_l^T w) + b + x_l
    assert torch.allclose(layer(x0, x), expected, atol=1e-6)


def test_dcnv2_cross_formula_structures_and_mixture(small_feature_map):
    torch.manual_seed(0)
    layer = CrossLayerV2(6)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    expected = x0 * (x @ layer.linear.weight.t() + layer.linear.bias) + x
    assert torch.allclose(layer(x0, x), expected, atol=1e-6)

    mix = LowRankMixtureCrossLayer(6, rank=3, experts=2)
    nn.init.normal_(mix.bias)
    gates = torch.softmax(torch.randn(4, 2), dim=-1)
    expected = x.clone()
    for i in range(2):  # sum_i g_i * x0 * (U_i tanh(C_i tanh(V_i^T x)) + b) + x
        z = torch.tanh(torch.tanh(x @ mix.v[i]) @ mix.c[i])
        expected = expected + gates[:, i:i + 1] * x0 * (z @ mix.u[i] + mix.bias)
    assert torch.allclose(mix(x0, x, gates), expected, atol=1e-5)

    batch = random_batch(small_feature_map, n=6)
    parallel = tiny_model("dcnv2", small_feature_map)
    stacked = tiny_model("dcnv2", small_feature_map, structure="stacked")
    d = 5 * 4
    assert parallel.head.in_features == d + 16 and stacked.head.in_features == 16
    assert stacked.dnn[0].in_features == d  # stacked: the DNN reads the cross output x_L ...
    spread_embeddings(parallel)
    spread_embeddings(stacked)
    stacked.load_state_dict({k: v for k, v in parallel.state_dict().items() if not k.startswith("head.")},
                            strict=False)
    parallel.eval()
    stacked.eval()
    with torch.no_grad():
        x0 = parallel.embedding(batch).flatten(1)
        x_l = parallel.cross_output(x0)
        assert torch.allclose(stacked(batch), stacked.head(stacked.dnn(x_l)).squeeze(-1))  # ... not x_0
        assert not torch.allclose(stacked.dnn(x_l), parallel.dnn(x0))
        assert torch.allclose(parallel(batch), parallel.head(torch.cat([x_l, parallel.dnn(x0)], 1)).squeeze(-1))


def test_dcnv2_mixture_gate_is_one_bias_free_matrix_shared_by_every_layer(small_feature_map):
    # As FuxiCTR's CrossNetMix (and the paper's G_i, which has no layer index): per layer V, C, U per expert and one
    # bias b; one gate W_G (K x D, no bias) for all layers, scoring each layer's own input x_l.
    model = tiny_model("dcnv2", small_feature_map, low_rank_mixture=True)  # 2 layers, D = 20, r = 3, K = 2
    layers, dim, rank, experts = 2, 5 * 4, 3, 2
    cross = sum(p.numel() for p in model.cross.parameters()) + sum(p.numel() for p in model.gate.parameters())
    assert cross == layers * (experts * (2 * dim * rank + rank * rank) + dim) + experts * dim
    assert model.gate.bias is None
    for layer in model.cross:
        nn.init.normal_(layer.bias)
    x0 = torch.randn(4, dim)
    with torch.no_grad():
        expected = x0
        for layer in model.cross:
            gates = torch.softmax(expected @ model.gate.weight.t(), dim=-1)  # the same W_G at every layer
            expected = layer(x0, expected, gates)
        assert torch.allclose(model.cross_output(x0), expected, atol=1e-6)
        assert torch.allclose(model.gate_weights(x0).sum(-1), torch.ones(4))


def test_autoint_attention_weights_are_distributions_over_fields(small_feature_map):
    model = tiny_model("autoint", small_feature_map)
    spread_embeddings(model)
    e = model.embedding(random_batch(small_feature_map, n=6))
    layer = model.attention[0]
    assert isinstance(layer, InteractingLayer)
    weights = layer.attention_weights(e)
    assert weights.shape == (6, 2, 5, 5)  # B x H x F x F
    assert (weights >= 0).all() and torch.allclose(weights.sum(-1), torch.ones(6, 2, 5))
    # a layer's output token m is ReLU(sum_k alpha_mk W_V e_k + W_Res e_m): check head 0 of token 0 by hand
    v = layer.value(e)[..., :4]  # head 0 of the values, B x F x d_h
    head0 = torch.einsum("bk,bkd->bd", weights[:, 0, 0], v)
    assert torch.allclose(layer(e)[:, 0, :4], torch.relu(head0 + layer.residual(e)[:, 0, :4]), atol=1e-6)
    scaled = InteractingLayer(4, 8, 2, use_scale=True, dropout=0.0)
    scaled.load_state_dict(layer.state_dict())
    assert torch.allclose(scaled.attention_weights(e), torch.softmax(
        torch.log(weights) / 2.0, dim=-1), atol=1e-5)  # 1/sqrt(d_h = 4) on the scores


def test_xdeepfm_cin_layer_formula():
    torch.manual_seed(0)
    b, h_prev, m, d, h = 2, 3, 4, 5, 2
    layer = CINLayer(h_prev, m, h)
    x_prev, x0 = torch.randn(b, h_prev, d), torch.randn(b, m, d)
    w = layer.weight.weight.view(h, h_prev, m)  # W^{k,h}_{ij}
    expected = torch.zeros(b, h, d)
    for hh in range(h):
        for i in range(h_prev):
            for j in range(m):
                expected[:, hh] += w[hh, i, j] * x_prev[:, i] * x0[:, j]
    assert torch.allclose(layer(x_prev, x0), expected, atol=1e-5)


def test_finalmlp_gates_start_at_one_and_fusion_is_bilinear(small_feature_map):
    model = tiny_model("finalmlp", small_feature_map)
    g1, g2 = model.gate1(), model.gate2()
    assert g1.shape == (5 * 4,) and torch.allclose(g1, torch.ones(20), atol=1e-2)
    assert torch.allclose(g2, torch.ones(20), atol=1e-2)
    torch.manual_seed(0)
    fusion = BilinearFusion(4, 6, heads=2)
    o1, o2 = torch.randn(3, 4), torch.randn(3, 6)
    expected = (fusion.linear1(o1) + fusion.linear2(o2)).squeeze(-1)
    for j in range(2):
        expected = expected + torch.einsum("bx,xy,by->b", o1[:, 2 * j:2 * j + 2], fusion.bilinear[j],
                                           o2[:, 3 * j:3 * j + 3])
    assert torch.allclose(fusion(o1, o2), expected, atol=1e-5)


def test_gdcn_gated_cross_layer_formula():
    torch.manual_seed(0)
    layer = GatedCrossLayer(6)
    c0, c = torch.randn(4, 6), torch.randn(4, 6)
    gate = torch.sigmoid(c @ layer.gate.weight.t())
    expected = c0 * (c @ layer.cross.weight.t() + layer.bias) * gate + c
    assert torch.allclose(layer(c0, c), expected, atol=1e-6)
    nn.init.constant_(layer.gate.weight, -1e3)  # a closed gate leaves only the residual (for positive inputs)
    assert torch.allclose(layer(c0, c.abs() + 0.1), c.abs() + 0.1)


def test_wukong_is_dlf_concat_without_alpha(small_feature_map):
    wukong = tiny_model("wukong", small_feature_map)
    spread_embeddings(wukong)
    t = TINY["wukong"]
    dlf_cfg = replace(get_entry("dlf_concat").default_config(), embedding_dim=t["embedding_dim"], layers=t["layers"],
                      rank=t["rank"], interaction_tokens=t["fmb_tokens"], implicit_tokens=t["lcb_tokens"],
                      hidden=t["hidden"], alpha=False)
    dlf = build_model("dlf_concat", small_feature_map, dlf_cfg)
    dlf.load_state_dict(wukong.state_dict())  # strict: the same parameters under the same names
    wukong.eval()
    dlf.eval()
    batch = random_batch(small_feature_map, n=6)
    with torch.no_grad():
        assert torch.allclose(wukong(batch), dlf(batch), atol=1e-5)
    assert wukong.layers[0].out_tokens == 4 + 3 and hasattr(wukong.layers[0], "residual_projection")  # 5 -> 7
    assert not hasattr(wukong.layers[1], "residual_projection")  # 7 tokens in, 7 out: identity residual


def test_finalnet_factorized_interaction_and_field_gate(small_feature_map):
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    concat = FactorizedInteraction(6, 4, "concat")
    h2, h1 = concat.linear(x).chunk(2, dim=-1)
    assert torch.allclose(concat(x), torch.cat([h2, h1 * h2], dim=-1))
    summed = FactorizedInteraction(6, 4, "sum")
    assert summed.linear.out_features == 8
    h2, h1 = summed.linear(x).chunk(2, dim=-1)
    assert torch.allclose(summed(x), h2 + h1 * h2)

    gate = FieldGate(5)
    gate.reset_parameters()
    e = torch.randn(2, 5, 4)
    assert torch.allclose(gate(e), torch.cat([e, e], dim=1))  # the gate starts open (1) for every field

    model = tiny_model("finalnet", small_feature_map)
    assert torch.equal(model.field_gate.proj.weight, torch.zeros(5, 5))  # not overwritten by the Xavier init
    spread_embeddings(model)
    model.eval()
    batch = random_batch(small_feature_map, n=6)
    with torch.no_grad():
        y1, y2 = model.branch_logits(batch)
        assert not torch.allclose(y1, y2)
        assert torch.allclose(model(batch), (y1 + y2) / 2)
        one_block = tiny_model("finalnet", small_feature_map, block_type="1B")
        assert not hasattr(one_block, "block2") and len(one_block.branch_logits(batch)) == 1


def test_finalnet_self_distillation_term_and_the_trainer_uses_it(small_feature_map, tmp_path):
    torch.manual_seed(0)
    model = tiny_model("finalnet", small_feature_map, batch_norm=False)
    spread_embeddings(model)
    batch = random_batch(small_feature_map, n=16)
    logit = model.train()(batch)
    y1, y2 = model.branch_logits(batch)
    target = torch.sigmoid(logit).detach()
    expected = F.binary_cross_entropy_with_logits(y1, target) + F.binary_cross_entropy_with_logits(y2, target)
    assert torch.allclose(model.auxiliary_loss, expected)
    # the target is the detached ensemble: the term's gradients are those of a constant target
    model.auxiliary_loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y1, y2 = model.branch_logits(batch)
    (F.binary_cross_entropy_with_logits(y1, target) + F.binary_cross_entropy_with_logits(y2, target)).backward()
    assert model.head1.weight.grad.abs().sum() > 0
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)
    for off in (dict(self_distillation=False), dict(block_type="1B")):
        other = tiny_model("finalnet", small_feature_map, **off).train()
        other(batch)
        assert getattr(other, "auxiliary_loss", None) is None
    model.auxiliary_loss = None
    model.eval()(batch)  # scoring adds no term
    assert model.auxiliary_loss is None

    from rich.console import Console

    import dlf
    from dlf.config import load_config
    runs = {}
    for on in (True, False):
        cfg = load_config(None, ["data.synthetic.rows=3000", "data.synthetic.max_cardinality=100", "train.epochs=1",
                                 "train.batch_size=256", "train.progress=false", "train.tensorboard=false",
                                 "model.embedding_dim=4", f"model.self_distillation={str(on).lower()}"],
                          model="finalnet")
        runs[on] = dlf.train(cfg, out=tmp_path / str(on), console=Console(quiet=True))
    assert runs[True]["test"]["auc"] != runs[False]["test"]["auc"]  # the trainer adds the term


@pytest.mark.parametrize("name,bad,message", [
    ("dnn", dict(hidden_units=()), "hidden_units"),
    ("fm", dict(embedding_dim=0), "embedding_dim"),
    ("deepfm", dict(dropout=1.0), "dropout"),
    ("dcn", dict(cross_layers=0), "cross_layers"),
    ("dcnv2", dict(structure="sideways"), "structure"),
    ("autoint", dict(attention_dim=9), "divisible"),
    ("xdeepfm", dict(cin_units=(4, 0)), "cin_units"),
    ("finalmlp", dict(mlp1_hidden_units=(16, 7)), "divisible"),
    ("gdcn", dict(structure="sideways"), "structure"),
    ("wukong", dict(rank=0), "rank"),
    ("finalnet", dict(block1_hidden_units=(8, 5)), "even"),
])
def test_invalid_configs_are_rejected(small_feature_map, name, bad, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, small_feature_map, tiny_config(name, **bad))
