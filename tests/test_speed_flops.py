"""The analytic FLOP counts of benchmarks/train_speed.py against torch's count of the products actually run."""
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dlf.data import FeatureMap, FieldSpec
from dlf.data.features import Batch
from conftest import load_benchmark
from dlf.models import build_model, get_entry

train_speed = load_benchmark("train_speed")

FM = FeatureMap([FieldSpec(f"c{i}", "categorical", vocab_size=7 + i) for i in range(4)]
                + [FieldSpec(f"n{i}", "numeric") for i in range(3)])
B = 5


def _batch(n: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randint(2, 7, (n, 4), generator=g), torch.rand(n, 3, generator=g),
                 torch.zeros(n, 0, 0, dtype=torch.int64), torch.randint(0, 2, (n,), generator=g).float())


def _counted_once(model, n: int, backward: bool) -> tuple[int, int]:
    model.train()
    with FlopCounterMode(display=False) as fwd:
        logits = model(_batch(n))
    if not backward:
        return fwd.get_total_flops(), 0
    with FlopCounterMode(display=False) as bwd:
        logits.sum().backward()
    return fwd.get_total_flops(), bwd.get_total_flops()


def _counted(model, backward: bool = False) -> tuple[int, int]:
    """Forward and backward FLOPs of B samples' worth of products, without products whose size does not depend on the
    batch (as NAF's T Q_bd, once per batch): the count at 2B minus the count at B."""
    (f1, b1), (f2, b2) = _counted_once(model, B, backward), _counted_once(model, 2 * B, backward)
    return f2 - f1, b2 - b1


DLF_TINY = dict(embedding_dim=8, layers=3, rank=3, interaction_tokens=5, implicit_tokens=4, hidden=16,
                attention_heads=2)
SWITCHES = [{}, dict(fusion="concat", gate=False), dict(alpha=False), dict(beta=False, gate=False),
            dict(gamma=False, fusion="concat"), dict(layers=1), dict(interaction_tokens=2, implicit_tokens=3)]


@pytest.mark.parametrize("switch", SWITCHES)
def test_dlf_count_matches_the_products_run(switch):
    cfg = replace(get_entry("dlf").default_config(), **{**DLF_TINY, **switch})
    torch.manual_seed(0)
    model = build_model("dlf", FM, cfg)
    forward, backward = _counted(model, backward=True)
    # FlopCounterMode has no rule for matrix-vector or per-token dot products, so the gate's R^T E w_g (N d per
    # layer) and its two gradients are not in its count; the analytic count includes them
    tokens = cfg.interaction_tokens * (cfg.alpha + cfg.beta) + cfg.implicit_tokens * cfg.gamma
    gate = cfg.layers * tokens * cfg.embedding_dim if cfg.gate else 0
    assert forward == 2 * B * (train_speed.forward_macs("dlf", cfg, FM.num_fields) - gate)
    # the 3x (forward + backward) of train_flops_per_sample: every product has an input and a weight gradient
    assert forward + backward == B * (train_speed.train_flops_per_sample("dlf", cfg, FM.num_fields) - 6 * gate)


def test_dlf_count_at_the_authors_sizes():
    """~15-18M multiply-adds per sample forward at d=64, L=3, r=24, 32+32 tokens, width 512 on 39 fields."""
    cfg = get_entry("dlf_concat").default_config()
    macs = train_speed.forward_macs("dlf_concat", cfg, 39)
    assert 14e6 < macs < 19e6
    assert train_speed.forward_macs("dlf", get_entry("dlf").default_config(), 39) > macs  # + NAF and gate


@pytest.mark.parametrize("name,overrides", [
    ("wukong", dict(embedding_dim=8, layers=2, rank=3, fmb_tokens=5, lcb_tokens=4, hidden=16)),
    ("wukong", dict(embedding_dim=8, layers=1, rank=2, fmb_tokens=3, lcb_tokens=4, hidden=8)),
    ("dcnv2", dict(embedding_dim=4, hidden_units=(16, 8))),
    ("dcnv2", dict(embedding_dim=4, hidden_units=(16, 8), structure="stacked")),
    ("dcnv2", dict(embedding_dim=4, structure="crossnet_only")),
    ("dcnv2", dict(embedding_dim=4, hidden_units=(16,), low_rank_mixture=True, low_rank=3, experts=2)),
])
def test_baseline_counts_match_the_products_run(name, overrides):
    cfg = replace(get_entry(name).default_config(), **overrides)
    torch.manual_seed(0)
    forward, _ = _counted(build_model(name, FM, cfg))
    assert forward == 2 * B * train_speed.forward_macs(name, cfg, FM.num_fields)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_benchmark_without_cuda_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        train_speed.main(["--device", "cuda", "--models", "dlf"])
    assert exc.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_interleaved_run_times_every_model_each_round(tmp_path, capsys):
    folder = tmp_path / "data"
    train_speed.generate_into(folder, rows=600, max_cardinality=50)
    job = {"models": ["dlf_concat", "dcnv2"], "precision": "fp32", "batch_size": 64, "steps": 3, "warmup": 1,
           "threads": 1, "data": str(folder), "loader": "array", "compile": False, "set": {"layers": 1},
           "embedding_optimizer": "dense", "device": "cpu"}
    result = train_speed.run_interleaved(job)
    assert {m: len(v) for m, v in result["step_s"].items()} == {"dlf_concat": 3, "dcnv2": 3}
    assert all(s > 0 for v in result["step_s"].values() for s in v)
    # the ratios are per round: model / first model, step by step
    result["step_s"] = {"dlf_concat": [1.0, 2.0, 1.0], "dcnv2": [1.2, 2.6, 1.1]}
    train_speed.print_interleaved(result)
    out = capsys.readouterr().out
    assert "dcnv2 / dlf_concat: median 1.200x, mean 1.200x" in out and "range 1.100-1.300" in out
    with pytest.raises(SystemExit, match="rows needed"):
        train_speed.run_interleaved({**job, "steps": 20})


def test_saved_activations_shrink_with_activation_checkpointing():
    torch.manual_seed(0)
    fm = FeatureMap([FieldSpec(f"c{i}", "categorical", vocab_size=50) for i in range(6)])
    batch = Batch(categorical=torch.randint(0, 50, (256, 6)), numeric=torch.zeros(256, 0),
                  multi=torch.zeros(256, 0, 0, dtype=torch.long), label=torch.zeros(256))
    cfg = replace(get_entry("dlf").default_config(), embedding_dim=16, hidden=32, interaction_tokens=8,
                  implicit_tokens=8, rank=4)
    sizes = {}
    for recompute in (False, True):
        model = build_model("dlf", fm, replace(cfg, checkpoint_layers=recompute)).train()
        sizes[recompute] = train_speed.saved_activations_gb(model, batch, torch.device("cpu"), "fp32")
    # every layer's token stream (256 x 24 x 16 fp32 = 0.39 MB) is kept at least once without checkpointing
    assert sizes[False] > 3 * 256 * 24 * 16 * 4 / 1e9
    assert 0 < sizes[True] < 0.5 * sizes[False]


def test_saved_tensor_listing_adds_up_to_the_activation_total():
    listing = load_benchmark("saved_activations")
    torch.manual_seed(0)
    model = build_model("dlf", FM, replace(get_entry("dlf").default_config(), **DLF_TINY)).train()
    groups = listing.saved_by_module(model, _batch(B), torch.device("cpu"), "fp32")
    assert sum(groups.values()) / 1e9 == train_speed.saved_activations_gb(model, _batch(B), torch.device("cpu"), "fp32")
    assert ("layers.0.norm", (14, 8), "float32") in groups  # the layer norm's input Z' + g R^T E: B x N x d
    assert any(module.startswith("layers.1+") for module, _, _ in groups)  # later layers are grouped
    assert all(not hook for m in model.modules() for hook in (m._forward_hooks, m._forward_pre_hooks))


def test_model_ab_loads_dlf_as_committed_at_a_revision():
    model_ab = load_benchmark("model_ab")
    try:
        old = model_ab.model_module_at("HEAD")
    except Exception as exc:  # a source tree without git history (an sdist): nothing to compare with
        pytest.skip(f"no git history: {exc}")
    import dlf.models.dlf as current
    cfg = replace(get_entry("dlf").default_config(), **DLF_TINY)
    committed = old.DLF(FM, old.DLFConfig(**vars(cfg))).eval()
    assert type(committed) is not current.DLF and old.__file__ != current.__file__  # its own copy, not the tree's
    out = committed(_batch(B))
    assert out.shape == (B,) and torch.isfinite(out).all()
