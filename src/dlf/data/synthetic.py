"""Criteo-shaped synthetic CTR data whose true click probability is known for every row.

Fields: categorical fields with Zipf-distributed values and log-spaced cardinalities,
numeric fields with heavy tails (log-normal counts) and missing values, and an optional
multi-valued field (a list of tags). Each field f gives every row a vector v_f:
  categorical: a row of a random table;  numeric: t * (random vector), t = log1p(x), 0 if missing;
  multi-valued: the mean of its tags' rows.
The pair parts of every v_f are centred (mean zero over the field's value distribution; numeric:
t minus its mean), so with independent fields the pair term below is a pure interaction: no
first-order part hides in it, and a linear model cannot reach it through main effects. The triple
parts are not centred: like most real higher-order effects, each planted triple comes with
lower-order parts (a pure three-way product of independent fields gives a learner no lower-order
gradient to start from, and the demo DLF did not find one built on the tag field in 10 epochs).
The true click logit is
  logit = b + s1 * first + s2 * pair + s3 * triple + s_noise * eps,   eps ~ N(0, 1) unobserved
  first  = sum_f v_f[0]                                   (first order)
  pair   = sum_{(f,g) in P} <v_f[pair part], v_g[pair part]>      (2nd order, k latent dims)
  triple = sum_{(f,g,h) in T} sum_k v_f[k] v_g[k] v_h[k]            (3rd order)
where each of first/pair/triple is scaled to unit standard deviation, so s1, s2, s3 are
their strengths, and b sets the click rate. The label is drawn from sigmoid(logit).
Given the observed features the best possible prediction (the oracle) is
  p(x) = E_eps[sigmoid(logit_without_noise + s_noise * eps)],
computed by Gauss-Hermite quadrature (exact to 1e-9 for s_noise <= 2, the allowed range), so oracle
AUC/logloss on the test split is the ceiling no model can beat beyond sampling noise. Everything is
deterministic for a seed, and the truth (tables, P and T) does not depend on `rows`; the scaling to unit
standard deviation, the numeric directions' centring and scale and the bias b are fitted on the sample, so
they move slightly with `rows`: more rows are a bigger sample of nearly the same world.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from dlf.data.dataset import ArrayDataset
from dlf.data.features import PAD_ID, FeatureMap, FieldSpec
from dlf.data.schema import DataError

FIRST_ID = 2  # ids 0 and 1 are PAD and OOV


@dataclass
class SyntheticConfig:
    rows: int = 1_000_000  # total, split by `splits`
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
    pairs: int = 12  # |P|, distinct field pairs
    triples: int = 4  # |T|, distinct field triples
    interaction_max_cardinality: int = 25  # only fields up to this size (and numeric/multi) take part in P and T
    first_order: float = 1.0  # s1
    pairwise: float = 1.2  # s2
    higher_order: float = 0.6  # s3
    noise: float = 0.3  # s_noise
    click_rate: float = 0.25
    seed: int = 2025

    def split_sizes(self) -> list[int]:
        """Rows of train, valid, test."""
        train, valid = (round(s * self.rows) for s in self.splits[:2])
        return [train, valid, self.rows - train - valid]

    def validate(self) -> None:
        if self.rows < 10:
            raise ValueError(f"data.synthetic.rows must be >= 10, got {self.rows}")
        if len(self.splits) != 3 or min(self.splits) <= 0 or abs(sum(self.splits) - 1) > 1e-6:
            raise ValueError(f"data.synthetic.splits must be three positive fractions summing to 1, got {self.splits}")
        for name, size in zip(("train", "valid", "test"), self.split_sizes()):
            if size < 1:  # it trained, then printed undefined test and oracle metrics
                raise ValueError(f"data.synthetic.rows={self.rows} with splits {tuple(self.splits)} leaves the "
                                 f"{name} split without rows; raise rows")
        if self.categorical < 3:
            raise ValueError("data.synthetic.categorical must be >= 3 (pairs and triples need fields)")
        if not 0 <= self.missing_rate < 1:
            raise ValueError(f"data.synthetic.missing_rate must be in [0, 1), got {self.missing_rate}")
        if not 0 < self.click_rate < 1:
            raise ValueError(f"data.synthetic.click_rate must be in (0, 1), got {self.click_rate}")
        # sizes the generator cannot use (multi_vocab=0 was an IndexError, min_cardinality=0 "Geometric sequence
        # cannot include zero", numeric=-1 "negative dimensions"; min > max quietly swapped the range)
        if not 1 <= self.min_cardinality <= self.max_cardinality:
            raise ValueError(f"data.synthetic: need 1 <= min_cardinality <= max_cardinality, got "
                             f"{self.min_cardinality} and {self.max_cardinality}")
        for key in ("numeric", "pairs", "triples", "interaction_max_cardinality"):
            if getattr(self, key) < 0:
                raise ValueError(f"data.synthetic.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("latent_dim",) + (("multi_vocab", "multi_max_len") if self.multi_valued else ()):
            if getattr(self, key) < 1:
                raise ValueError(f"data.synthetic.{key} must be >= 1, got {getattr(self, key)}")
        if not self.zipf >= 0:
            raise ValueError(f"data.synthetic.zipf must be >= 0, got {self.zipf}")
        # past 2 the oracle's 48-node quadrature drifts off the probabilities the labels are drawn from
        # (1e-6 at noise 3, 0.005 at 10): it would no longer be the ceiling it is printed as
        if not 0 <= self.noise <= 2:
            raise ValueError(f"data.synthetic.noise must be in [0, 2], got {self.noise}")


@dataclass
class SyntheticData:
    feature_map: FeatureMap
    train: ArrayDataset
    valid: ArrayDataset
    test: ArrayDataset
    # per split ("train", "valid", "test"): the planted logit components as they enter the logit, each
    # standardised over all rows: "first", "pair", "triple" (logit = b + s1 first + s2 pair + s3 triple)
    components: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _zipf_probs(n_values: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n_values + 1) ** exponent
    return p / p.sum()


def _zipf_sample(rng: np.random.Generator, n_values: int, exponent: float, size) -> np.ndarray:
    cdf = np.cumsum(_zipf_probs(n_values, exponent))
    return np.minimum(np.searchsorted(cdf, rng.random(size)), n_values - 1)


def _centred_table(world: np.random.Generator, probs: np.ndarray, k: int) -> np.ndarray:
    """A random value table whose pair columns (1..k) have mean zero under `probs`."""
    table = world.standard_normal((len(probs), 1 + 2 * k))
    table[:, 1:1 + k] -= probs @ table[:, 1:1 + k]
    return table


def _distinct_groups(world: np.random.Generator, fields: list[int], size: int, count: int,
                     cfg: SyntheticConfig) -> list[tuple[int, ...]]:
    """`count` distinct field groups of `size` (the planted pairs P or triples T), drawn from `fields`."""
    groups = list(itertools.combinations(fields, size))
    if count > len(groups):
        raise DataError(f"data.synthetic: {count} distinct groups of {size} asked for, but only {len(fields)} "
                         f"field(s) may interact ({len(groups)} groups); raise interaction_max_cardinality "
                         f"(now {cfg.interaction_max_cardinality}), add numeric fields or ask for fewer")
    return [groups[i] for i in world.choice(len(groups), size=count, replace=False)]


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
    world = np.random.default_rng([cfg.seed, 0])  # the truth: tables, numeric directions, P and T
    rng = np.random.default_rng([cfg.seed, 1])  # the rows drawn from it
    n, k = cfg.rows, cfg.latent_dim
    width = 1 + 2 * k  # per-field vector: [first order | pair latent | triple latent]

    cards = np.geomspace(cfg.min_cardinality, cfg.max_cardinality, cfg.categorical).round().astype(int)
    specs: list[FieldSpec] = []
    # every field's per-row vector, filled in place (one n x F x width array, no per-field copies to stack)
    v = np.empty((n, cfg.categorical + cfg.numeric + int(cfg.multi_valued), width))
    interacting: list[int] = []  # indices (into the field axis of v) of fields allowed in P and T

    categorical = np.empty((n, cfg.categorical), dtype=np.int32)
    for j, card in enumerate(cards):
        values = _zipf_sample(rng, card, cfg.zipf, n)
        categorical[:, j] = values + FIRST_ID
        v[:, len(specs)] = _centred_table(world, _zipf_probs(card, cfg.zipf), k)[values]
        if card <= cfg.interaction_max_cardinality:
            interacting.append(len(specs))
        specs.append(FieldSpec(f"c{j + 1}", "categorical", vocab_size=int(card) + FIRST_ID))

    numeric = np.zeros((n, cfg.numeric), dtype=np.float32)
    for j in range(cfg.numeric):
        raw = np.floor(rng.lognormal(mean=1.0 + j, sigma=1.5, size=n))  # heavy-tailed counts
        t = np.log1p(raw)
        t[rng.random(n) < cfg.missing_rate] = 0.0  # missing: model input and truth both see 0
        numeric[:, j] = t
        direction = world.standard_normal(width) / max(t.std(), 1e-6)
        v[:, len(specs)] = t[:, None] * direction
        v[:, len(specs), 1:1 + k] -= t.mean() * direction[1:1 + k]
        interacting.append(len(specs))
        specs.append(FieldSpec(f"i{j + 1}", "numeric"))

    multi = np.zeros((n, 1 if cfg.multi_valued else 0, cfg.multi_max_len), dtype=np.int32)
    if cfg.multi_valued:
        lengths = rng.integers(1, cfg.multi_max_len + 1, size=n)
        tags = _zipf_sample(rng, cfg.multi_vocab, 1.0, (n, cfg.multi_max_len))
        mask = np.arange(cfg.multi_max_len)[None, :] < lengths[:, None]
        multi[:, 0, :] = np.where(mask, tags + FIRST_ID, PAD_ID)
        table = _centred_table(world, _zipf_probs(cfg.multi_vocab, 1.0), k)  # the mean of i.i.d. tags: centred too
        v[:, len(specs)] = (table[tags] * mask[..., None]).sum(1) / lengths[:, None]
        interacting.append(len(specs))
        specs.append(FieldSpec("tags", "multi", vocab_size=cfg.multi_vocab + FIRST_ID, max_len=cfg.multi_max_len))

    first = v[:, :, 0].sum(1)
    pair = np.zeros(n)
    for f, g in _distinct_groups(world, interacting, 2, cfg.pairs, cfg):
        pair += (v[:, f, 1:1 + k] * v[:, g, 1:1 + k]).sum(1)
    triple = np.zeros(n)
    for f, g, h in _distinct_groups(world, interacting, 3, cfg.triples, cfg):
        triple += (v[:, f, 1 + k:] * v[:, g, 1 + k:] * v[:, h, 1 + k:]).sum(1)
    unit = lambda a: (a - a.mean()) / (a.std() + 1e-12)
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
    bounds = np.cumsum(cfg.split_sizes()[:2])
    parts = np.split(np.arange(n), bounds)
    ds = [ArrayDataset(categorical[i], numeric[i], multi[i], label[i], prob=prob[i]) for i in parts]
    planted = {"first": unit(first), "pair": unit(pair), "triple": unit(triple)}
    components = {name: {k: c[i] for k, c in planted.items()} for name, i in zip(("train", "valid", "test"), parts)}
    return SyntheticData(fm, *ds, components=components)
