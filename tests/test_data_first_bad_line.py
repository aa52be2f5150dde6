"""The first bad line of a file is the one reported in stop mode, whichever check finds it (the reader, a preset's
own derivation, the parser), and skip mode lists the first ten bad lines."""
from pathlib import Path

from dlf.data.preprocess import preprocess
from dlf.data.readers import BadRows

FIX = Path(__file__).parent / "fixtures" / "data"


def test_skip_mode_lists_the_first_ten_bad_lines_whichever_check_finds_them(tmp_path):
    """The reader's bad lines of a chunk were listed before the parser's: with odd lines of too few columns and
    even lines with a bad I2 in one chunk, the examples were lines 1, 3, ..., 15, 2, 4 instead of lines 1-10."""
    lines = (FIX / "criteo_tiny.txt").read_text().splitlines()
    for i in range(16):
        parts = lines[i].split("\t")
        lines[i] = "\t".join(parts[:20]) if i % 2 == 0 else "\t".join(parts[:2] + ["x"] + parts[3:])
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n")
    r = preprocess("criteo", [path], tmp_path / "out", options={"min_count": 1}, on_bad_row="skip")
    bad = r.feature_map.meta["bad_rows"]
    assert bad["count"] == 16 and [int(e.split(":")[1]) for e in bad["examples"]] == list(range(1, 11))
    assert "expected 40 columns" in bad["examples"][0] and "field 'I2'" in bad["examples"][1]


def test_a_bad_row_reported_without_its_line_is_listed_after_those_before_it():
    bad = BadRows("skip")
    for line in (30, 10, 20):
        bad.add(f"a.csv:{line}", "bad", "a.csv", line)
    bad.add("a.csv:25", "bad", "a.csv")  # e.g. a row the model scored NaN: after the rows reported before it
    bad.add("b.csv:1", "bad", "b.csv", 1)
    assert bad.examples == ["a.csv:10: bad", "a.csv:20: bad", "a.csv:30: bad", "a.csv:25: bad", "b.csv:1: bad"]
    for line in range(2, 12):
        bad.add(f"b.csv:{line}", "bad", "b.csv", line)
    assert bad.count == 15 and bad.examples[-1] == "b.csv:6: bad" and len(bad.examples) == 10
