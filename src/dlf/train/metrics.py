"""Classification metrics computed on whole arrays (no per-row Python).

`roc_auc` handles tied scores with average ranks (the Mann-Whitney form), which is
what scikit-learn's trapezoidal ROC area equals. AUCs are NaN where undefined: one class,
or a NaN score (scikit-learn raises there). `log_loss` clips like scikit-learn.
"""
from __future__ import annotations

import numpy as np


def _average_ranks(sorted_scores: np.ndarray) -> np.ndarray:
    """1-based ranks of an ascending array, ties sharing their average rank."""
    n = len(sorted_scores)
    starts_mask = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    starts = np.flatnonzero(starts_mask)
    ends = np.r_[starts[1:], n]
    return ((starts + ends + 1) / 2.0)[np.cumsum(starts_mask) - 1]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    # NaN scores (a diverged model) have no rank: argsort put them on top and gave them an AUC
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = _average_ranks(s[order])
    return float((ranks[y[order] == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs).ravel()
    eps = np.finfo(p.dtype if p.dtype.kind == "f" else np.float64).eps
    p = np.clip(p.astype(np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups that have both classes."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if np.isnan(s).any():  # as in roc_auc: unrankable
        return float("nan")
    order = np.lexsort((s, g))  # by group, then score
    y, s, g = y[order], s[order], g[order]
    _, g_idx = np.unique(g, return_inverse=True)
    # Global average ranks over (group, score) ties, then shifted so each group starts at rank 1.
    key_change = np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])]
    starts = np.flatnonzero(key_change)
    ends = np.r_[starts[1:], len(s)]
    ranks = ((starts + ends + 1) / 2.0)[np.cumsum(key_change) - 1]
    group_start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ranks = ranks - group_start[g_idx]
    n = np.bincount(g_idx).astype(np.float64)
    n_pos = np.bincount(g_idx, weights=y)
    n_neg = n - n_pos
    pos_rank_sum = np.bincount(g_idx, weights=ranks * y)
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    auc = (pos_rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2) / (n_pos[valid] * n_neg[valid])
    return float(np.sum(auc * n[valid]) / n[valid].sum())


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean predicted CTR over observed CTR (1.0 = calibrated on average)."""
    observed = float(np.mean(labels))
    return float(np.mean(probs)) / observed if observed > 0 else float("nan")


def classification_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None) -> dict:
    if len(labels) == 0:  # every metric is undefined (NumPy's mean of nothing would warn "Mean of empty slice")
        return dict.fromkeys(["auc", "logloss", "calibration"] + (["gauc"] if groups is not None else []), float("nan"))
    out = {"auc": roc_auc(labels, probs), "logloss": log_loss(labels, probs),
           "calibration": calibration(labels, probs)}
    if groups is not None:
        out["gauc"] = group_auc(labels, probs, groups)
    return out
