"""`dlf predict` on an ids bundle (a synthetic run: inputs are encoded ids): in stop mode the first bad row of the
file is the one reported, whichever field is bad on it; skip mode lists the bad rows in line order."""
import pytest

from dlf.data.schema import DataError
from dlf.serve.bundle import export_bundle, load_bundle
from dlf.serve.predict import predict_file


@pytest.fixture(scope="module")
def ids_bundle(tmp_path_factory):
    from rich.console import Console

    from dlf.api import train

    folder = tmp_path_factory.mktemp("ids_bundle")
    cfg = {"model": {"name": "lr"}, "data": {"synthetic": {"rows": 200, "categorical": 3, "numeric": 1,
                                                             "max_cardinality": 20, "pairs": 4, "triples": 1,
                                                             "seed": 1}},
           "train": {"epochs": 1, "batch_size": 64, "progress": False, "tensorboard": False}}
    train(cfg, out=folder / "run", console=Console(quiet=True))
    bundle = load_bundle(export_bundle(folder / "run", folder / "bundle", format="torch"))
    assert bundle.mode == "ids"
    return bundle


# what makes a row bad, for each kind of field (in the order the encoder checks them: categorical, numeric, multi)
BAD = {"categorical": "abc", "numeric": "old", "multi": "3|x"}


@pytest.mark.parametrize("first, later", [("numeric", "categorical"), ("multi", "categorical"),
                                          ("multi", "numeric"), ("categorical", "multi")])
def test_the_first_bad_row_is_reported_whichever_field_is_bad(ids_bundle, tmp_path, first, later):
    """The fields were checked and reported one after the other: a bad numeric value on line 3 lost to a bad
    categorical id on line 6."""
    fm = ids_bundle.feature_map
    fields = fm.of_kind("categorical") + fm.of_kind("numeric") + fm.of_kind("multi")
    column = {kind: [f.name for f in fields].index(fm.of_kind(kind)[0].name) for kind in BAD}
    rows = [["1"] * len(fm.of_kind("categorical")) + ["0.5"] * len(fm.of_kind("numeric"))
            + ["2|3"] * len(fm.of_kind("multi")) for _ in range(8)]
    rows[1][column[first]] = BAD[first]  # line 3 (after the header)
    rows[4][column[later]] = BAD[later]  # line 6
    path = tmp_path / "in.csv"
    path.write_text("\n".join(",".join(r) for r in [[f.name for f in fields]] + rows) + "\n")
    name = fields[column[first]].name
    with pytest.raises(DataError, match=rf"in\.csv:3: field {name!r}: expected "):
        predict_file(ids_bundle, path, tmp_path / "out.csv")
    res = predict_file(ids_bundle, path, tmp_path / "out.csv", on_bad_row="skip")
    assert res.rows == 6 and res.bad_rows["count"] == 2
    assert [e.split(":")[1] for e in res.bad_rows["examples"]] == ["3", "6"]
