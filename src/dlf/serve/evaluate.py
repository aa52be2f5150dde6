"""Offline evaluation of a bundle: `dlf evaluate BUNDLE --input FILE`.

Scores a labelled file of raw rows (say the next day's logs; libFM lines for a libfm/frappe model) exactly as
`dlf predict` does (same readers, encoders, engines and bad-row handling; see dlf.serve.predict) and computes the
trainer's test metrics on it: AUC, logloss, calibration (mean predicted CTR / observed CTR) and, with a group column,
gAUC. The label column is the training data's and is checked as preprocessing checks it (a bad label is a bad row).
On the bundle's own test file it gives the run's test metrics.

Memory: one chunk of text, plus each row's probability and label (8 bytes a row) and, for gAUC, its group id (8
bytes), because AUC ranks all rows at once.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dlf._io import atomic_write_json
from dlf.data.readers import BadRows
from dlf.data.schema import DataError
from dlf.serve.bundle import Bundle
from dlf.serve.encoding import UnseenCounts
from dlf.serve.predict import DEFAULT_BATCH_SIZE, DEFAULT_BLOCK_BYTES, Scorer, check_input, scored_chunks
from dlf.train.metrics import classification_metrics


@dataclass
class EvaluateResult:
    input: Path
    rows: int  # rows scored
    positives: int
    metrics: dict  # auc, logloss, calibration; gauc with a group column (NaN where undefined)
    group_column: str | None = None
    bad_rows: dict = field(default_factory=dict)  # BadRows.summary()
    seconds: float = 0.0
    unseen: dict = field(default_factory=dict)  # UnseenCounts.summary(): per vocabulary field, its unseen values

    def to_dict(self) -> dict:
        return {"input": str(self.input), "rows": self.rows, "positives": self.positives,
                "metrics": {k: (v if np.isfinite(v) else None) for k, v in self.metrics.items()},
                "group_column": self.group_column, "bad_rows": self.bad_rows, "seconds": round(self.seconds, 3),
                "unseen": self.unseen}


def evaluate_file(bundle: Bundle, input: str | Path, *, group_column: str | None = None, on_bad_row: str = "error",
                  engine: str = "torch", fmt: str = "auto", header: bool | None = None,
                  columns: list[str] | None = None, delimiter: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                  block_bytes: int = DEFAULT_BLOCK_BYTES, precision: str = "fp32", scorer: Scorer | None = None,
                  log: Callable[[str], None] | None = None) -> EvaluateResult:
    """Score every labelled row of INPUT and return its metrics (see module doc). group_column None: the training
    data's group column, when it had one; "": none (no gAUC). Raises DataError / BundleError."""
    started = time.perf_counter()
    log = log or (lambda msg: None)
    bad = BadRows(on_bad_row)
    scorer = scorer or Scorer(bundle, engine, batch_size, precision=precision)
    label = bundle.encoder.label
    # '' opts out: a file without the training group column (when it is no model input) could not be evaluated at all
    default_group = group_column is None
    group_column = bundle.feature_map.group if default_group else group_column or None
    if group_column == label:
        raise DataError(f"--group-column {group_column!r} is the label column")
    probs, labels, groups = [], [], []
    rows = 0
    unseen = UnseenCounts()
    # the group ids are training's: of the value after the preset's derivation (kdd12's user 0 is the missing user);
    # a column the preset derives (avazu's weekday) is not in the file
    read = [group_column] if group_column and group_column not in bundle.encoder.derived else None
    chunks = scored_chunks(bundle, input, bad, scorer, labels=True, group=group_column, unseen=unseen, fmt=fmt,
                           header=header, columns=columns, delimiter=delimiter, block_bytes=block_bytes, extra=read)
    try:
        for _, p, _, y, g in chunks:
            probs.append(p)
            labels.append(y)
            groups.append(g)
            rows += len(p)
            if len(probs) % 20 == 0:
                log(f"{rows:,} rows scored")
    except DataError as exc:  # the file lacks only the group column the user did not ask for: say how to go without
        # (not when it is a model input too: without it the rows cannot be scored, gAUC or not)
        if (default_group and read and group_column not in bundle.encoder.columns
                and f"no column(s) [{group_column!r}]" in str(exc)):
            raise DataError(f"{exc} (the training data's group column, the default for gAUC; --group-column '' "
                            "evaluates without gAUC)") from None
        raise
    if rows == 0:
        raise DataError(f"{input}: no rows to evaluate" + (" (every row was bad)" if bad.count else ""))
    y = np.concatenate(labels)
    metrics = classification_metrics(y, np.concatenate(probs), np.concatenate(groups) if group_column else None)
    return EvaluateResult(Path(input), rows, int(y.sum()), metrics, group_column, bad.summary(),
                          time.perf_counter() - started, unseen.summary(bundle.feature_map))


def check_json(path: Path, input: str | Path) -> None:
    """Check `--json PATH` before scoring, which can take hours: not a folder, not the input file (which was
    overwritten with the metrics). The command then makes its folder with predict's folder_for."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory; --json must be a file")
    check_input(input)
    if path.exists() and path.samefile(input):
        raise DataError(f"{path}: --json must not be the input file")


def write_json(result: EvaluateResult, path: Path) -> None:
    """The metrics as JSON, written atomically; a FIFO or device (/dev/stdout, a link to the pipe) in place, as
    predict's --output: renaming a temporary file over it replaced the node itself with a regular file."""
    try:
        if path.exists() and not path.is_file():
            path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        else:
            atomic_write_json(path, result.to_dict())
    except OSError as exc:
        raise DataError(f"{path}: cannot write the metrics: {exc.strerror or exc}") from None
