"""Criteo-shaped synthetic CTR data whose true click probability is known for every row.

Fields: categorical fields with Zipf-distributed values and log-spaced cardinalities,
numeric fields with heavy tails (log-normal counts) and missing values, and an optional
multi-valued field (a list of tags). Each field f gives every row a vector v_f:
  categorical: a row of a random table;  numeric: t * (random vector), t = log1p(x), 0 if missing;
  multi-valued: the mean of its tags' rows.
The true click logit is
  logit = b + s1 * first + s2 * pair + s3 * triple + s_noise * eps,   eps ~ N(0, 1) unobserved
  first  = sum_f v_f[0]                                   (first order)
  pair   = sum_{(f,g) in P} <v_f[pair part], v_g[pair part]>      (2nd order, k latent dims)
  triple = sum_{(f,g,h) in T} sum_k v_f[k] v_g[k] v_h[k]            (3rd order)
where each of first/pair/triple is scaled to unit standard deviation, so s1, s2, s3 are
their strengths, and b sets the click rate. The label is drawn from sigmoid(logit).
Given the observed features the best possible prediction (the oracle) is
  p(x) = E_eps[sigmoid(logit_without_noise + s_noise * eps)],
computed by Gauss-Hermite quadrature, so oracle AUC/logloss on the test split is the
ceiling no model can beat beyond sampling noise. Everything is deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dlf.data.dataset import ArrayDataset
from dlf.data.features import PAD_ID, FeatureMap, FieldSpec

FIRST_ID = 2  # ids 0 and 1 are PAD and OOV


@dataclass
class SyntheticConfig:
    rows: int = 300_000  # total, split by `splits`
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    categorical: int = 16
    min_cardinality: int = 3
    max_cardinality: int = 20_000
    zipf: float = 1.6
    numeric: int = 4
    missing_rate: float = 0.15
    multi_valued: bool = True
    multi_vocab: int = 40
    multi_max_len: int = 5
    latent_dim: int = 4  # k: size of the pair and triple latent vectors
    pairs: int = 12  # |P|
    triples: int = 4  # |T|
    interaction_max_cardinality: int = 25  # only fields up to this size (and numeric/multi) take part in P and T
    first_order: float = 1.0  # s1
    pairwise: float = 1.2  # s2
    higher_order: float = 0.6  # s3
    noise: float = 0.3  # s_noise
    click_rate: float = 0.25
    seed: int = 2025

    def validate(self) -> None:
        if self.rows < 10:
            raise ValueError(f"data.synthetic.rows must be >= 10, got {self.rows}")
        if len(self.splits) != 3 or min(self.splits) <= 0 or abs(sum(self.splits) - 1) > 1e-6:
            raise ValueError(f"data.synthetic.splits must be three positive fractions summing to 1, got {self.splits}")
        if self.categorical < 3:
            raise ValueError("data.synthetic.categorical must be >= 3 (pairs and triples need fields)")
        if not 0 <= self.missing_rate < 1:
            raise ValueError(f"data.synthetic.missing_rate must be in [0, 1), got {self.missing_rate}")
        if not 0 < self.click_rate < 1:
            raise ValueError(f"data.synthetic.click_rate must be in (0, 1), got {self.click_rate}")


@dataclass
class SyntheticData:
    feature_map: FeatureMap
    train: ArrayDataset
    valid: ArrayDataset
    test: ArrayDataset
    # per split ("train", "valid", "test"): the planted logit components as they enter the logit, each
    # standardised over all rows: "first", "pair", "triple" (logit = b + s1 first + s2 pair + s3 triple)
    components: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _zipf_sample(rng: np.random.Generator, n_values: int, exponent: float, size) -> np.ndarray:
    p = 1.0 / np.arange(1, n_values + 1) ** exponent
    cdf = np.cumsum(p / p.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(size)), n_values - 1)


def expected_sigmoid(logit: np.ndarray, noise_std: float, nodes: int = 48) -> np.ndarray:
    """E[sigmoid(logit + noise_std * eps)], eps ~ N(0, 1), by Gauss-Hermite quadrature."""
    if noise_std == 0:
        return 1.0 / (1.0 + np.exp(-logit))
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # probabilists' Hermite: weight exp(-x^2/2)
    w = w / w.sum()
    out = np.zeros_like(logit)
    for xi, wi in zip(x, w):  # quadrature nodes, not rows
        out += wi / (1.0 + np.exp(-(logit + noise_std * xi)))
    return out


def generate(cfg: SyntheticConfig | None = None) -> SyntheticData:
    cfg = cfg or SyntheticConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    n, k = cfg.rows, cfg.latent_dim
    width = 1 + 2 * k  # per-field vector: [first order | pair latent | triple latent]

    cards = np.geomspace(cfg.min_cardinality, cfg.max_cardinality, cfg.categorical).round().astype(int)
    specs: list[FieldSpec] = []
    vectors: list[np.ndarray] = []  # per field, n x width
    interacting: list[int] = []  # indices (into `vectors`) of fields allowed in P and T

    categorical = np.empty((n, cfg.categorical), dtype=np.int32)
    for j, card in enumerate(cards):
        values = _zipf_sample(rng, card, cfg.zipf, n)
        categorical[:, j] = values + FIRST_ID
        table = rng.standard_normal((card, width))
        vectors.append(table[values])
        specs.append(FieldSpec(f"c{j + 1}", "categorical", vocab_size=int(card) + FIRST_ID))
        if card <= cfg.interaction_max_cardinality:
            interacting.append(len(vectors) - 1)

    numeric = np.zeros((n, cfg.numeric), dtype=np.float32)
    for j in range(cfg.numeric):
        raw = np.floor(rng.lognormal(mean=1.0 + j, sigma=1.5, size=n))  # heavy-tailed counts
        t = np.log1p(raw)
        t[rng.random(n) < cfg.missing_rate] = 0.0  # missing: model input and truth both see 0
        numeric[:, j] = t
        direction = rng.standard_normal(width) / max(t.std(), 1e-6)
        vectors.append(t[:, None] * direction)
        specs.append(FieldSpec(f"i{j + 1}", "numeric"))
        interacting.append(len(vectors) - 1)

    multi = np.zeros((n, 1 if cfg.multi_valued else 0, cfg.multi_max_len), dtype=np.int32)
    if cfg.multi_valued:
        lengths = rng.integers(1, cfg.multi_max_len + 1, size=n)
        tags = _zipf_sample(rng, cfg.multi_vocab, 1.0, (n, cfg.multi_max_len))
        mask = np.arange(cfg.multi_max_len)[None, :] < lengths[:, None]
        multi[:, 0, :] = np.where(mask, tags + FIRST_ID, PAD_ID)
        table = rng.standard_normal((cfg.multi_vocab, width))
        vectors.append((table[tags] * mask[..., None]).sum(1) / lengths[:, None])
        specs.append(FieldSpec("tags", "multi", vocab_size=cfg.multi_vocab + FIRST_ID, max_len=cfg.multi_max_len))
        interacting.append(len(vectors) - 1)

    if len(interacting) < 3 and (cfg.pairs or cfg.triples):
        raise ValueError(f"data.synthetic: only {len(interacting)} field(s) may interact; raise "
                         f"interaction_max_cardinality (now {cfg.interaction_max_cardinality}) or add numeric fields")
    v = np.stack(vectors, axis=1)  # n x F x width
    first = v[:, :, 0].sum(1)
    pair = np.zeros(n)
    for _ in range(cfg.pairs):
        f, g = rng.choice(interacting, size=2, replace=False)
        pair += (v[:, f, 1:1 + k] * v[:, g, 1:1 + k]).sum(1)
    triple = np.zeros(n)
    for _ in range(cfg.triples):
        f, g, h = rng.choice(interacting, size=3, replace=False)
        triple += (v[:, f, 1 + k:] * v[:, g, 1 + k:] * v[:, h, 1 + k:]).sum(1)
    unit = lambda a: (a - a.mean()) / (a.std() + 1e-12)  # noqa: E731
    signal = cfg.first_order * unit(first) + cfg.pairwise * unit(pair) + cfg.higher_order * unit(triple)

    # Bias b such that the mean click probability equals click_rate (bisection on a fixed subsample;
    # mean p is monotone in b).
    sample = signal[:: max(1, n // 20_000)]
    lo, hi = -20.0, 20.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_sigmoid(sample + mid, cfg.noise).mean() < cfg.click_rate else (lo, mid)
    logit = signal + (lo + hi) / 2
    prob = expected_sigmoid(logit, cfg.noise)
    eps = rng.standard_normal(n)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + cfg.noise * eps)))).astype(np.float32)

    fm = FeatureMap(specs, meta={"source": "synthetic", "rows": n, "label_rate": float(label.mean())})
    # FeatureMap order: categorical, numeric, multi -- the same order the embedding emits tokens in.
    bounds = np.cumsum([int(round(s * n)) for s in cfg.splits[:2]])
    parts = np.split(np.arange(n), bounds)
    ds = [ArrayDataset(categorical[i], numeric[i], multi[i], label[i], prob=prob[i]) for i in parts]
    planted = {"first": unit(first), "pair": unit(pair), "triple": unit(triple)}
    components = {name: {k: c[i] for k, c in planted.items()} for name, i in zip(("train", "valid", "test"), parts)}
    return SyntheticData(fm, *ds, components=components)
