"""Schema: YAML in both field styles, strict keys and types, clear errors."""
import pytest

from dlf.data.schema import DataError, Schema

FIX = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"


def test_yaml_shorthand_and_full_form_give_typed_fields(tmp_path):
    s = Schema.from_yaml(FIX / "generic_schema.yaml")
    assert s.label == "click" and s.group == "user" and s.format == "csv"
    assert [(f.name, f.kind) for f in s.fields] == [("user", "categorical"), ("city", "categorical"),
                                                    ("age", "numeric"), ("tags", "multi")]
    assert s.fields[2].transform == "standardize" and s.fields[3].separator == ";"
    assert s.split.ratios == (0.6, 0.2, 0.2) and s.split.seed == 3
    p = tmp_path / "s.yaml"
    p.write_text("label: y\ndefaults: {min_count: 3}\nfields:\n  - {name: a}\n  - {name: b, kind: numeric, "
                 "transform: log}\n  - {name: c, source: raw_c, buckets: 100}\n")
    s = Schema.from_yaml(p)
    assert [f.min_count for f in s.fields] == [3, 3, 3] and s.fields[2].column == "raw_c" and s.fields[2].buckets == 100


@pytest.mark.parametrize("text, needle", [
    ("label: y\nfields: [{name: a, min_cout: 2}]\n", "unknown key 'min_cout'"),
    ("label: y\nfeilds: [a]\n", "unknown key 'feilds'"),
    ("label: y\ncategorical: [a]\nsplit: {metod: time}\n", "unknown key 'metod'"),
    ("label: y\nfields: [{name: a, kind: numerc}]\n", "kind must be one of"),
    ("label: y\nfields: [{name: a, kind: numeric, transform: criteo-bucket}]\n", "use kind: categorical"),
    ("label: y\nfields: [{name: a, min_count: two}]\n", "min_count: expected an integer"),
    ("label: y\ncategorical: [a, a]\n", "duplicate field name"),
    ("label: y\nheader: false\ncategorical: [a]\n", "needs `columns`"),
    ("label: y\ncategorical: [a]\nsplit: {ratios: [0.5, 0.1]}\n", "ratios must be three"),
    ("label: y\ncategorical: [a]\nsplit: {ratios: [.nan, 0.5, 0.5]}\n", "ratios must be three"),  # was accepted
    ("label: y\ncategorical: [a]\nsplit: {ratios: [0.5, .nan, 0.5]}\n", "ratios must be three"),
    ("label: y\ncategorical: [a]\nsplit: {ratios: [a, b, c]}\n", "split.ratios: expected three numbers"),  # tracebacks
    ("label: y\ncategorical: [a]\nsplit: {ratios: 0.8}\n", "split.ratios: expected three numbers"),
    ("label: y\ncategorical: [a]\nsplit: {seed: x}\n", "split.seed: expected an integer"),
    ("label: y\ncategorical: [a]\nencoding: latin-9x\n", "encoding: unknown encoding 'latin-9x'"),  # LookupError
    ("label: y\ncategorical: [a]\ndelimiter: '||'\n", "delimiter must be one character"),  # header split on '||'
    ("label: y\ncategorical: [a]\nsplit: {method: time, time_column: 5}\n", "split.time_column: expected a string"),
    ("label: y\n", "no fields"),
    ("- a\n- b\n", "must hold a mapping"),
    ("label: [\n", "not valid YAML"),
    ("label: y\ncategorical: city\n", "categorical must be a list of column names"),  # was ['c','i','t','y']
    ("label: y\nfields: {name: a}\n", "fields must be a list of fields"),
    ("label: click\ncategorical: [click, city]\n", "label: column 'click' is also the feature 'click'"),
    ("label: click\nfields: [{name: c2, source: click}]\n", "label: column 'click' is also the feature 'c2'"),
    # the name is the file vocab/<name>.arrow: FileNotFoundError deep in preprocess, after all the work
    ("label: y\ncategorical: [a, site/app]\n", "the name 'site/app' cannot name a file"),
    ("label: y\nfields: [{name: '..', source: b}]\n", "{name: field, source: ..}"),
])
def test_bad_schema_names_the_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(DataError) as exc:
        Schema.from_yaml(p)
    assert needle in str(exc.value) and "bad.yaml" in str(exc.value)


def test_missing_schema_file():
    with pytest.raises(DataError, match="does not exist"):
        Schema.from_yaml("/nonexistent/s.yaml")


def test_digest_changes_with_options():
    a = Schema.from_yaml(FIX / "generic_schema.yaml")
    b = Schema.from_yaml(FIX / "generic_schema.yaml")
    assert a.digest() == b.digest()
    b.fields[0].min_count = 5
    assert a.digest() != b.digest()
