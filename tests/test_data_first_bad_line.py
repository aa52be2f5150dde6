"""The first bad line of a file is the one reported in stop mode, whichever check finds it (the reader, a preset's
own derivation, the parser), and skip mode lists the first ten bad lines."""
import shutil
from pathlib import Path

import pytest

from dlf.data.preprocess import preprocess
from dlf.data.readers import BadRows
from dlf.data.schema import DataError

FIX = Path(__file__).parent / "fixtures" / "data"


def field(sep: str, j: int, value: str):
    def edit(line: str) -> str:
        parts = line.split(sep)
        parts[j] = value
        return sep.join(parts)
    return edit


# preset: (input in the fixtures, file inside it, options, a bad value another check finds (the parser's, or the
# reader's), the preset's own problem, what each is reported as)
PRESETS = {
    "avazu": ("avazu_tiny.csv", None, {"min_count": 1}, field(",", 1, "x"), field(",", 2, "zz"),
              "field 'click': expected label", "field 'hour': expected YYMMDDHH, got 'zz'"),
    "libfm": ("tiny.libfm", None, {"fields": "user:4,item:5,ctx:3"}, field(" ", 0, "x"), lambda l: l + " 99:1",
              "field 'label': expected label", "feature '99:1': expected index:value with an index inside"),
    "movielens-1m": ("movielens_tiny", "ratings.dat", {}, lambda l: "::".join(l.split("::")[:3]),
                     field("::", 2, "7"), "expected 4 fields separated by '::'", "field 'rating': expected 1-5"),
    "kkbox": ("kkbox_tiny.csv", None, {"min_count": 1}, field(",", 0, "x"), field(",", 7, "old"),
              "field 'label': expected label", "field 'bd': expected an age (a number), got 'old'"),
    "kdd12": ("kdd12_tiny", "training.txt", {"min_count": 1}, field("\t", 1, "x"), field("\t", 0, "x"),
              "field 'impression': expected a number", "field 'click': expected a click count"),
}


@pytest.mark.parametrize("chunks", ["one", "many"])
@pytest.mark.parametrize("preset_first", [False, True])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_presets_own_problem_is_reported_in_line_order(tmp_path, preset, preset_first, chunks):
    """A preset's derivation (avazu's hour, libFM's features, MovieLens' rating, KKBox's bd, KDD12's click)
    reported its bad rows before the parser saw the rows ahead of them: avazu with click 'x' on line 3 and hour
    'zz' on line 7 stopped at line 7."""
    src, name, options, generic, own, generic_says, own_says = PRESETS[preset]
    given = tmp_path / src
    if (FIX / src).is_dir():
        shutil.copytree(FIX / src, given)
    else:
        shutil.copy(FIX / src, given)
    path = given / name if name else given
    lines = path.read_text(encoding="latin-1").split("\n")
    first, later = (own, generic) if preset_first else (generic, own)
    lines[2], lines[6] = first(lines[2]), later(lines[6])
    path.write_text("\n".join(lines), encoding="latin-1")
    block_bytes = 1 << 24 if chunks == "one" else max(map(len, lines)) + 2  # many: about a line each
    with pytest.raises(DataError) as exc:
        preprocess(preset, [given], tmp_path / "out", options=options, block_bytes=block_bytes)
    assert str(exc.value).startswith(f"{path}:3: {own_says if preset_first else generic_says}")
    r = preprocess(preset, [given], tmp_path / "out", options=options, block_bytes=block_bytes, on_bad_row="skip")
    bad = r.feature_map.meta["bad_rows"]
    assert bad["count"] == 2 and [e.split(":")[1] for e in bad["examples"]] == ["3", "7"]
    assert (own_says if preset_first else generic_says) in bad["examples"][0]
    assert (generic_says if preset_first else own_says) in bad["examples"][1]


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
