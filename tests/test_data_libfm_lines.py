"""libFM lines as written by hand or by other tools: blanks at either end of a line, and tokens without ':'."""
import re

import numpy as np
import pytest

from dlf.data.preprocess import preprocess
from dlf.data.schema import DataError
from dlf.data.store import load_processed

OPTIONS = {"fields": "user:4,item:5,ctx:3", "ratios": "1,0,0"}


def test_blanks_around_a_line_are_not_tokens(tmp_path):
    # Arrow's whitespace split gives an empty token for a blank at either end: a trailing space was an ArrowInvalid
    # traceback ('Index 1 is out of bounds'), a leading one read the label as a feature
    data = tmp_path / "a.libfm"
    data.write_text("1 2:1 4:1 10:1 \n -1 1:1 5:1\t\n")
    preprocess("libfm", [data], tmp_path / "o", options=OPTIONS)
    _, tr, _, _ = load_processed(tmp_path / "o")
    np.testing.assert_array_equal(np.asarray(tr.label), [1.0, 0.0])
    assert (np.asarray(tr.categorical)[:, :2] >= 2).all()  # user and item read on both lines


@pytest.mark.parametrize("line,message", [
    ("-1 1:1 7", "feature '7': expected index:value with an index inside one field's range"),
    ("  ", "expected 'label index:value ...', got '  '"),
])
def test_a_malformed_line_is_a_bad_row(tmp_path, line, message):
    data = tmp_path / "a.libfm"
    data.write_text(f"1 2:1 4:1 10:1\n{line}\n-1 1:1 5:1\n")
    with pytest.raises(DataError, match=f"^{re.escape(f'{data}:2: {message}')}"):  # were ArrowInvalid tracebacks
        preprocess("libfm", [data], tmp_path / "o", options=OPTIONS)
    preprocess("libfm", [data], tmp_path / "s", options=OPTIONS, on_bad_row="skip")
    assert len(load_processed(tmp_path / "s")[1]) == 2
