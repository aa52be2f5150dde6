"""Every registered model under edge-case configs and inputs, as a user reaches them (`dlf train --set model.KEY=V`
goes through load_config): a config is either a one-line ConfigError naming its key, or a model whose logits and
gradients are finite."""
import dataclasses
import math
import typing

import pytest
import torch
import torch.nn.functional as F

from conftest import random_batch
from dlf.config import ConfigError, load_config
from dlf.data import Batch, FeatureMap, FieldSpec
from dlf.models import available_models, build_model, get_entry

# small sizes so that each case builds in milliseconds (the defaults are the papers')
SIZES = dict(embedding_dim=8, hidden=16, rank=3, interaction_tokens=3, implicit_tokens=2, fmb_tokens=3, lcb_tokens=2)


def small(name: str) -> list[str]:
    cfg = get_entry(name).default_config()
    sets = [f"model.{k}={v}" for k, v in SIZES.items() if hasattr(cfg, k)]
    return sets + [f"model.{f.name}=[16, 16]" for f in dataclasses.fields(cfg)
                   if isinstance(getattr(cfg, f.name), tuple)]


def edge_values(name: str) -> list[tuple[str, str]]:
    """(key, value) pairs: every key of the model's config at the edges of its type."""
    cfg = get_entry(name).default_config()
    hints = typing.get_type_hints(type(cfg))
    cases = []
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints[f.name]
        if typing.get_origin(hint) is typing.Literal:
            values = [repr(v) for v in typing.get_args(hint)]
        elif isinstance(value, bool):
            values = [str(not value).lower()]
        elif isinstance(value, int):
            values = ["-1", "0", "1"]
        elif isinstance(value, float):
            values = ["-0.5", "0.0", "1.0"]
        else:  # a tuple of sizes
            values = ["[]", "[0]", "[1]", "[2]"]
        cases += [(f.name, v) for v in values]
    return cases


CASES = [(name, key, value) for name in available_models() for key, value in edge_values(name)]


def check_finite(model: torch.nn.Module, batch: Batch) -> None:
    model.train()
    logits = model(batch)
    assert logits.shape == (len(batch),) and torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, batch.label).backward()
    for pname, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


@pytest.mark.parametrize("name,key,value", CASES, ids=[f"{n}-{k}={v}" for n, k, v in CASES])
def test_edge_config_is_a_config_error_naming_the_key_or_trains(small_feature_map, name, key, value):
    try:
        cfg = load_config(None, small(name) + [f"model.{key}={value}"], model=name)
    except ConfigError as exc:
        assert f"model.{key}" in str(exc) and "\n" not in str(exc)
        return
    torch.manual_seed(0)
    check_finite(build_model(name, small_feature_map, cfg.model), random_batch(small_feature_map, 8))


def test_zero_embedding_init_std_is_refused_because_fm_would_never_learn_its_pairs(small_feature_map):
    # all-zero embeddings are a stationary point of FM's pairwise term: d<v_i, v_j>/dv_i = v_j = 0
    fm = build_model("fm", small_feature_map, get_entry("fm").config_cls(embedding_init_std=1e-4))
    torch.nn.init.zeros_(fm.embedding.table)
    torch.nn.init.zeros_(fm.embedding.numeric_weight)
    batch = random_batch(small_feature_map, 8)
    F.binary_cross_entropy_with_logits(fm(batch), batch.label).backward()
    assert not fm.embedding.table.grad.any()
    for name in available_models():
        with pytest.raises(ConfigError, match="model.embedding_init_std must be > 0, got 0.0"):
            load_config(None, ["model.embedding_init_std=0"], model=name)


def edge_batch(fm: FeatureMap, n: int) -> Batch:
    """Every categorical and multi-valued id at the top of its vocabulary (the last row of its block in the fused
    table), every multi-valued list all padding but the first row's, numeric values up to 1e3 in size."""
    g = torch.Generator().manual_seed(0)
    cat = torch.tensor([f.vocab_size - 1 for f in fm.of_kind("categorical")], dtype=torch.int64).expand(n, -1)
    multi_fields = fm.of_kind("multi")
    multi = torch.zeros(n, len(multi_fields), max((f.max_len for f in multi_fields), default=1), dtype=torch.int64)
    multi[0] = torch.tensor([f.vocab_size - 1 for f in multi_fields]).unsqueeze(-1)
    numeric = torch.randn(n, len(fm.of_kind("numeric")), generator=g) * torch.logspace(0, 3, n).unsqueeze(-1)
    return Batch(cat.contiguous(), numeric, multi, torch.arange(n).remainder(2).float())


FEATURE_MAPS = {
    "numeric-only": [FieldSpec("n1", "numeric"), FieldSpec("n2", "numeric")],
    "one-categorical": [FieldSpec("c", "categorical", vocab_size=3)],
    "one-numeric": [FieldSpec("n", "numeric")],
    "one-multi": [FieldSpec("tags", "multi", vocab_size=4, max_len=3)],
    "all-kinds": [FieldSpec("c", "categorical", vocab_size=5), FieldSpec("n", "numeric"),
                  FieldSpec("tags", "multi", vocab_size=4, max_len=2)],
}


@pytest.mark.parametrize("fields", FEATURE_MAPS.values(), ids=FEATURE_MAPS.keys())
@pytest.mark.parametrize("name", available_models())
def test_every_model_is_finite_at_init_on_edge_inputs(name, fields):
    fm = FeatureMap(fields)
    cfg = load_config(None, small(name), model=name).model
    torch.manual_seed(0)
    check_finite(build_model(name, fm, cfg), edge_batch(fm, 2))  # 2: the smallest batch the trainer trains on


TINY_DATA = ["data.synthetic.rows=200", "data.synthetic.categorical=3", "data.synthetic.max_cardinality=20",
             "data.synthetic.pairs=1", "data.synthetic.triples=1", "train.epochs=1", "train.progress=false",
             "train.tensorboard=false", "train.batch_size=1"]


def test_batch_size_one_is_a_training_error_for_a_model_with_batchnorm_and_trains_one_without():
    from dlf.api import train
    from dlf.train.trainer import TrainingError

    # every step was torch's "Expected more than 1 value per channel when training" traceback
    with pytest.raises(TrainingError, match=r"train.batch_size=1 .* BatchNorm .* use train.batch_size >= 2"):
        train(load_config(None, small("finalnet") + TINY_DATA, model="finalnet"))
    assert math.isfinite(train(load_config(None, TINY_DATA, model="lr"))["test"]["logloss"])
