"""A CSV label column that pandas wrote from a bool column holds True/False: read as 1/0 (as a Parquet bool is), by
`dlf preprocess` and by `dlf evaluate`; any other text is still a bad label."""
from pathlib import Path

import numpy as np
import pytest

from dlf.data.preprocess import preprocess
from dlf.data.schema import DataError
from dlf.data.store import load_processed

FIXTURES = Path(__file__).parent / "fixtures" / "data"
WORDS = {"1": ["True", "true", " TRUE"], "0": ["False", "false", "FaLsE "]}


def bool_labels(src: Path, dst: Path) -> Path:
    """SRC with its 0/1 labels (the first column) spelt as true/false words, in several cases."""
    head, *body = src.read_text().splitlines()
    body = [WORDS[line[0]][i % 3] + line[1:] for i, line in enumerate(body)]
    dst.write_text("\n".join([head, *body]) + "\n")
    return dst


def test_true_false_labels_read_as_1_and_0(tmp_path):
    words = bool_labels(FIXTURES / "generic_tiny.csv", tmp_path / "words.csv")
    schema = FIXTURES / "generic_schema.yaml"
    preprocess("generic", [FIXTURES / "generic_tiny.csv"], tmp_path / "digits", schema=schema)
    preprocess("generic", [words], tmp_path / "words", schema=schema)
    for want, got in zip(load_processed(tmp_path / "digits")[1:], load_processed(tmp_path / "words")[1:]):
        np.testing.assert_array_equal(np.asarray(got.label), np.asarray(want.label))
    lines = words.read_text().splitlines()
    lines[3] = "yes" + lines[3][lines[3].index(","):]
    words.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"words\.csv:4: field 'click': expected label 0 or 1, got 'yes'$"):
        preprocess("generic", [words], tmp_path / "bad", schema=schema)


def test_evaluate_reads_true_false_labels_as_preprocessing_does(tmp_path):
    from rich.console import Console

    from dlf.api import train
    from dlf.serve.bundle import export_bundle, load_bundle
    from dlf.serve.evaluate import evaluate_file

    preprocess("generic", [FIXTURES / "generic_tiny.csv"], tmp_path / "data", schema=FIXTURES / "generic_schema.yaml")
    train({"model": {"name": "lr"}, "data": {"dataset": "processed", "path": str(tmp_path / "data")},
           "train": {"epochs": 1, "monitor": "logloss", "progress": False, "tensorboard": False}},
          out=tmp_path / "run", console=Console(quiet=True))
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle"))
    want = evaluate_file(bundle, FIXTURES / "generic_tiny.csv")
    got = evaluate_file(bundle, bool_labels(FIXTURES / "generic_tiny.csv", tmp_path / "words.csv"))
    assert got.rows == want.rows == 30 and got.positives == want.positives
    assert got.metrics == pytest.approx(want.metrics)
