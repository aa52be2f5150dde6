"""Every YAML file shipped under configs/ loads, and the paper recipe is the authors' settings."""
from pathlib import Path

import pytest

import dlf
from dlf.bench.runner import build_config, load_spec, run_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_run_configs_load(path):
    cfg = dlf.load_config(path)
    assert cfg.model_name


@pytest.mark.parametrize("path", sorted((CONFIGS / "bench").glob("*.yaml")), ids=lambda p: p.name)
def test_bench_specs_build_every_run(path):
    spec = load_spec(path, check_data=False)  # paper-small names folders that dlf preprocess writes
    for dataset in spec.datasets:
        for variant in spec.models:  # each dataset's and variant's overrides make a valid run config
            build_config(None, run_overrides(spec, dataset, variant, spec.seeds[0])[0])


def test_paper_recipe_is_the_authors_settings():
    """dlf-model.md, 'Defaults the authors ran with'."""
    cfg = dlf.load_config(CONFIGS / "paper.yaml")
    m, t = cfg.model, cfg.train
    assert (cfg.model_name, m.embedding_dim, m.layers, m.rank, m.interaction_tokens, m.implicit_tokens, m.hidden,
            m.dropout) == ("dlf", 64, 3, 24, 32, 32, 512, 0.0)
    assert (t.optimizer, t.lr, t.batch_size, t.clip_norm, t.monitor, t.lr_decay, t.patience) == (
        "adam", 1e-3, 10_000, 10.0, "auc-logloss", 0.1, 2)
    assert t.embedding_l2 == t.net_l2 == t.weight_decay == 0
