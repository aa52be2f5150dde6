"""Schema: YAML in both field styles, strict keys and types, clear errors."""
import json
import re

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
    # options a field's kind does not read were silently ignored
    ("label: y\nnumeric: [{name: a, buckets: 100}]\n", "numeric[0].buckets: does not apply to a numeric field ('a')"),
    ("label: y\nfields: [{name: a, kind: numeric, min_count: 5}]\n", "min_count: does not apply to a numeric"),
    ("label: y\ncategorical: [{name: a, separator: ';'}]\n", "separator: does not apply to a categorical"),
    ("label: y\ncategorical: [{name: a, max_len: 3}]\n", "max_len: does not apply to a categorical"),
    ("label: y\ncategorical: [{name: a, buckets: 8, min_count: 3}]\n", "min_count (with buckets"),
    ("label: y\nmulti: [{name: a, transform: criteo-bucket}]\n", "use kind: categorical"),
    ("label: y\ncategorical: [a, a]\n", "duplicate field name"),
    ("label: y\nmulti: [{name: a, fill_na: x}]\n", "fill_na gives a missing categorical or numeric value a non-empty"),
    ("label: y\nnumeric: [{name: a, fill_na: abc}]\n", "fill_na of a numeric field must be a finite number"),
    ("label: y\nheader: false\ncategorical: [a]\n", "needs `columns`"),
    ("label: y\ncategorical: [a]\nsplit: {ratios: [0.5, 0.1]}\n", "ratios must be three"),
    ("label: y\ncategorical: [a]\nsplit: {ratios: [.nan, 0.5, 0.5]}\n", "ratios must be three"),  # was accepted
    ("label: y\ncategorical: [a]\nsplit: {ratios: [0.5, .nan, 0.5]}\n", "ratios must be three"),
    ("label: y\ncategorical: [a]\nsplit: {ratios: [a, b, c]}\n", "split.ratios: expected three numbers"),  # tracebacks
    ("label: y\ncategorical: [a]\nsplit: {ratios: 0.8}\n", "split.ratios: expected three numbers"),
    ("label: y\ncategorical: [a]\nsplit: {seed: x}\n", "split.seed: expected an integer"),
    # read by one split method only: the split was silently random
    ("label: y\ncategorical: [a]\nsplit: {time_column: ts}\n", "split.time_column is read by method time only"),
    ("label: y\ncategorical: [a]\nsplit: {method: sequential, seed: 3}\n", "split.seed is read by method random"),
    ("label: y\ncategorical: [a]\nencoding: latin-9x\n", "encoding: unknown encoding 'latin-9x'"),  # LookupError
    ("label: y\ncategorical: [a]\ndelimiter: '||'\n", "delimiter must be one character"),  # header split on '||'
    ("label: y\ncategorical: [a]\nsplit: {method: time, time_column: 5}\n", "split.time_column: expected a string"),
    ("label: y\n", "no fields"),
    ("- a\n- b\n", "must hold a mapping"),
    ("label: [\n", "is not valid YAML: line 2: expected the node content, but found '<stream end>'"),  # one line
    ("label: y\ncategorical: city\n", "categorical must be a list of column names"),  # was ['c','i','t','y']
    ("label: y\nfields: {name: a}\n", "fields must be a list of fields"),
    ("label: click\ncategorical: [click, city]\n", "label: column 'click' is also the feature 'click'"),
    ("label: click\nfields: [{name: c2, source: click}]\n", "label: column 'click' is also the feature 'c2'"),
    ("label: click\ncategorical: [city]\ngroup: click\n", "group: column 'click' is the label"),  # gAUC: n/a
    ("label: click\ncategorical: [city]\nsplit: {method: time, time_column: click}\n",
     "split.time_column: column 'click' is the label"),  # train: the 0s, test: the 1s
    # the name is the file vocab/<name>.arrow: FileNotFoundError deep in preprocess, after all the work
    ("label: y\ncategorical: [a, site/app]\n", "the name 'site/app' cannot name a file"),
    ("label: y\nfields: [{name: '..', source: b}]\n", "{name: field, source: ..}"),
    ("label: y\ncategorical: [" + "x" * 250 + "]\n", "at most 249 bytes"),  # 'File name too long' after all the work
    ("label: y\ncategorical: [City, city]\n", "field names 'City' and 'city' differ only in case"),  # macOS: one file
])
def test_bad_schema_names_the_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(DataError) as exc:
        Schema.from_yaml(p)
    assert needle in str(exc.value) and "bad.yaml" in str(exc.value)
    assert "\n" not in str(exc.value)  # PyYAML's own report spans lines


@pytest.mark.parametrize("text, needle", [
    ("label: y\ncategorical: [a]\nnumeric: [{name: b, transform: criteo-bucket}]\n",
     "numeric[0] ('b'): transform 'criteo-bucket' makes categories"),
    ("label: y\ncategorical: [a]\nmulti: [{name: b, separator: ''}]\n", "multi[0] ('b'): a multi-valued field needs"),
    ("label: y\nfields: [c]\ncategorical: [a, site/app]\n", "categorical[1] ('site/app'): the name 'site/app' cannot"),
    ("label: y\nfields: [c, {name: d, kind: numeric, transform: bad}]\n", "fields[1] ('d'): transform must be one of"),
])
def test_a_bad_field_is_named_by_its_own_key(tmp_path, text, needle):
    """A field's bad value was located by its place among all fields, the long form's first: `numeric[0]` said
    `fields[0]`, a key the file may not have."""
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(DataError, match=re.escape(f"schema file '{p}': {needle}")):
        Schema.from_yaml(p)


def test_a_schema_file_that_is_not_utf8_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes("label: y\ncategorical: [caf\xe9]\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"bad.yaml' is not UTF-8 text: invalid continuation byte at byte 26$"):
        Schema.from_yaml(p)


def test_missing_schema_file():
    with pytest.raises(DataError, match="does not exist"):
        Schema.from_yaml("/nonexistent/s.yaml")


def test_digest_changes_with_options():
    a = Schema.from_yaml(FIX / "generic_schema.yaml")
    b = Schema.from_yaml(FIX / "generic_schema.yaml")
    assert a.digest() == b.digest()
    b.fields[0].min_count = 5
    assert a.digest() != b.digest()


def test_fill_na_reads_from_yaml_and_is_left_out_of_the_dict_when_unset(tmp_path):
    """fill_na (a missing value's text) takes a number or a string; unset, the schema's dict (its digest, the
    fingerprint of processed data) is what it was before the key existed."""
    p = tmp_path / "s.yaml"
    p.write_text("label: y\ncategorical: [{name: a, fill_na: none}, b]\nnumeric: [{name: c, fill_na: 0.0}]\n")
    s = Schema.from_yaml(p)
    assert [f.fill_na for f in s.fields] == ["none", None, "0"]
    fields = s.to_dict()["fields"]
    assert fields[0]["fill_na"] == "none" and "fill_na" not in fields[1]
    assert Schema.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # as a feature map stores it
