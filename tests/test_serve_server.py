"""The scoring server through FastAPI's TestClient: valid, malformed, oversized and unauthorised
requests get the right status codes, the server stays healthy, predictions equal `dlf predict`'s,
metrics and access logs are written; and the load-test script runs against a real server."""
import json
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from dlf.serve.bundle import export_bundle, load_bundle  # noqa: E402
from dlf.serve.demo import build_demo_run  # noqa: E402
from dlf.serve.predict import predict_file  # noqa: E402
from dlf.serve.server import Metrics, create_app  # noqa: E402

KEY = "s3cret"
AUTH = {"X-API-Key": KEY}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_server")
    paths = build_demo_run(folder, rows=2000, test_rows=200)
    paths["bundle"] = export_bundle(paths["run"], folder / "bundle")
    return paths


@pytest.fixture(scope="module")
def client(demo):
    app = create_app(load_bundle(demo["bundle"]), api_key=KEY, max_batch=50, max_body_bytes=20_000)
    with TestClient(app) as c:
        yield c


def test_predict_matches_batch_scoring(demo, client, tmp_path):
    out = predict_file(load_bundle(demo["bundle"]), demo["test_csv"], tmp_path / "p.parquet", id_column="id")
    want = pq.read_table(out.output)["probability"].to_numpy()[:40]
    table = pcsv.read_csv(demo["test_csv"], convert_options=pcsv.ConvertOptions(
        column_types={c: "string" for c in ["id", "click", "city", "device", "age", "tags", "site", "visits"]},
        strings_can_be_null=False))
    rows = table.slice(0, 40).to_pylist()
    records = [{k: v for k, v in r.items() if k not in ("id", "click")} for r in rows]
    r = client.post("/predict", json=records, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == 40 and body["model"] == "dlf" and r.headers["x-request-id"]
    np.testing.assert_allclose(body["probabilities"], want, rtol=0, atol=1e-6)
    # JSON numbers, lists for multi-valued fields, null / absent = missing give the same answers
    typed = []
    for rec in records:
        t = dict(rec)
        t["age"] = int(t["age"]) if t["age"] else None
        t["visits"] = float(t["visits"]) if t["visits"] else None
        t["tags"] = t["tags"].split(";") if t["tags"] else []
        if not t["city"]:
            del t["city"]
        typed.append(t)
    r = client.post("/predict", json={"records": typed}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], want, rtol=0, atol=1e-6)
    # a bf16 server answers as bf16 batch scoring does
    out = predict_file(load_bundle(demo["bundle"]), demo["test_csv"], tmp_path / "p16.parquet", precision="bf16")
    want16 = pq.read_table(out.output)["probability"].to_numpy()[:40]
    bf16 = TestClient(create_app(load_bundle(demo["bundle"]), precision="bf16"))
    r = bf16.post("/predict", json=records)
    assert r.status_code == 200 and bf16.get("/metadata").json()["precision"] == "bf16", r.text
    np.testing.assert_allclose(r.json()["probabilities"], want16, rtol=0, atol=1e-5)
    assert np.abs(np.array(r.json()["probabilities"]) - want).max() > 0


def test_validation_errors_are_field_level_422(client):
    r = client.post("/predict", json=[{"city": "city1", "age": "forty", "colour": "red"}, 7,
                                      {"tags": {"a": 1}, "device": True, "site": [1]}], headers=AUTH)
    assert r.status_code == 422
    detail = {tuple(d["loc"]): d["msg"] for d in r.json()["detail"]}
    assert detail[("body", 0, "age")] == "expected a number, got 'forty'"
    assert detail[("body", 0, "colour")].startswith("unknown field; the inputs are: site, visits, city")
    assert detail[("body", 1)] == "expected an object of field values"
    assert "separator-joined string" in detail[("body", 2, "tags")]
    assert "a list" in detail[("body", 2, "site")]
    assert ("body", 2, "device") not in detail  # a boolean is "1"/"0", as a Parquet bool column reads
    for body in (b"[{", b"\xff\xfe", b"", b'{"rows": []}', b"[]", b"NaN", b'[{"age": NaN}]',
                 b"[" * 5000 + b"]" * 5000):  # too deep for json's recursive parser: was a 500 (RecursionError)
        r = client.post("/predict", content=body, headers=AUTH | {"Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.text)
        assert isinstance(r.json()["detail"], list)
    # a key given twice: json kept the last value silently (city2 was scored)
    r = client.post("/predict", content=b'[{"city": "city1"}, {"city": "city1", "city": "city2"}]',
                    headers=AUTH | {"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"] == [{
        "loc": ["body"], "msg": "invalid JSON: key 'city' appears twice in one object", "type": "value_error.json"}]


def test_out_of_range_numbers_and_lone_surrogates_are_422(client):
    """These were 500s: a NaN probability (not JSON), UnicodeEncodeError in Arrow; 1e400 was read as missing."""
    cases = {'[{"age": 1e30}]': (["body", 0, "age"], "value too far outside the training range"),
             '[{"city": "c1"}, {"age": "1e400"}]': (["body", 1, "age"], "expected a finite number"),
             '[{"age": 1e39}]': (["body", 0, "age"], "expected a finite number within +-3.403e+38 (float32), got "
                                                     "'1e+39'"),
             '[{"city": "\\ud800x"}]': (["body", 0, "city"], "expected valid Unicode text, got a lone surrogate"),
             '[{"\\udc80": 1}]': (["body", 0, "\\udc80"], "unknown field")}
    for body, (loc, msg) in cases.items():
        r = client.post("/predict", content=body, headers=AUTH | {"Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.text)
        detail = r.json()["detail"][0]
        # the location is in loc alone: the encoder's messages started 'record row 0: field 'age': '
        assert detail["loc"] == loc and detail["msg"].startswith(msg), (body, r.text)
    assert client.post("/predict", json=[{"age": 1e6}], headers=AUTH).status_code == 200
    # the encoder's errors name the field in loc, as the request checks do (was ["body", 0]); a message of the
    # encoder without a field keeps the record
    from dlf.serve.server import _record_error
    assert _record_error("record row 2: field \"it's\": expected a number") == {
        "loc": ["body", 2, "it's"], "msg": "expected a number", "type": "value_error"}
    assert _record_error("record row 4: the model's output is NaN for this row") == {
        "loc": ["body", 4], "msg": "the model's output is NaN for this row", "type": "value_error"}


def test_integers_of_any_length(client):
    """JSON integers have no length limit, but json's int() refuses more than 4,300 digits: a 5,000-digit id was a 422
    'invalid JSON: Exceeds the limit (4300 digits) ...; use sys.set_int_max_str_digits() to increase the limit'."""
    def post(body: bytes):
        return client.post("/predict", content=body, headers=AUTH | {"Content-Type": "application/json"})
    huge = b"9" * 5000
    unseen = post(b'[{"city": "no-such-city", "tags": ["no-such-tag"]}]')
    r = post(b'[{"city": ' + huge + b', "tags": [' + huge + b"]}]")  # unseen categories, as any other
    assert r.status_code == 200 and r.json() == unseen.json(), r.text
    r = post(b'[{"age": ' + huge + b"}]")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", 0, "age"]
    assert r.json()["detail"][0]["msg"].startswith("expected a finite number within"), r.text
    # small integers are their text, as before: 34, "34" and 34.0 (and -0, 0) are one value
    answers = [post(b'[{"city": %s, "age": %s, "visits": %s}]' % v).json() for v in
               ((b"34", b"34", b"-0"), (b'"34"', b'"34"', b"0"), (b"34.0", b"34.0", b"0.0"))]
    assert answers[0] == answers[1] == answers[2]


def test_error_messages_do_not_echo_long_values(client):
    """Each field error quoted its whole value: 15 records with 1,000 characters of text in a numeric field (or an
    unseen category list nested where items belong) got a 422 as large as the request; messages are cut."""
    for record in ({"age": "x" * 1000}, {"age": "9" * 1000}, {"tags": [["a" * 1000]]}, {"tags": [{"b": "c" * 1000}]}):
        r = client.post("/predict", json=[record] * 15, headers=AUTH)
        assert r.status_code == 422 and len(r.json()["detail"]) >= 10, r.text  # (the encoder reports 10)
        for d in r.json()["detail"]:
            assert len(d["msg"]) < 250 and d["msg"].endswith(" characters)") and d["loc"][2] == next(iter(record))
        assert len(r.content) < 6000
    r = client.post("/predict", json=[{"k" * 3000: 1}] * 5, headers=AUTH)  # unknown field names are cut too
    assert r.status_code == 422 and len(r.content) < 5000 and r.json()["detail"][0]["loc"][2].endswith(" characters)")
    from dlf.serve.server import _record_error
    assert _record_error("record row 2: field 'age': expected a number, got '" + "x" * 300 + "'") == {
        "loc": ["body", 2, "age"], "msg": "expected a number, got '" + "x" * 176 + "... (325 characters)",
        "type": "value_error"}


def test_a_record_of_many_unknown_fields_stops_at_the_error_limit(demo, monkeypatch):
    """validate_records built an error for each of a record's keys and kept the first 50: one 4 MB record of 330,000
    unknown keys took a second of the event loop (every other request waited); it stops at the limit."""
    from dlf.serve import server

    clipped = []
    monkeypatch.setattr(server, "_clip", lambda text: clipped.append(text) or text)
    with pytest.raises(server.RequestError) as exc:
        server.validate_records([{f"k{i}": 0 for i in range(10_000)}], load_bundle(demo["bundle"]).encoder.inputs, 10)
    assert exc.value.status == 422 and len(exc.value.detail) == server.MAX_ERRORS
    assert len(clipped) <= 2 * server.MAX_ERRORS  # (each unknown key's name and message are clipped)


def test_request_bodies_are_checked_off_the_event_loop(client, monkeypatch):
    """The JSON parse and the record checks ran on the event loop: [{"tags": [1.5, ...]}] with 300,000 floats (1.5 MB)
    took 5 s to check, and /health, /metrics and every other client waited; they run in a worker thread."""
    import asyncio

    from dlf.serve import server

    loops = []

    def validate(*args):
        try:
            loops.append(asyncio.get_running_loop())
        except RuntimeError:  # no event loop in this thread
            loops.append(None)
        return original(*args)

    original = server.validate_records
    monkeypatch.setattr(server, "validate_records", validate)
    assert client.post("/predict", json=[{"tags": [1.5, 2.5]}], headers=AUTH).status_code == 200
    assert loops == [None]


def test_a_list_of_floats_is_cast_to_text_in_one_arrow_call(demo, monkeypatch):
    """Each float item of a multi-valued field got its text from an Arrow call of its own: a list of 300,000 floats
    (1.5 MB; a few kilobytes gzip-compressed) took 5 s of CPU. One call per list; the texts are Arrow's as before."""
    from dlf.serve import server

    tags = next(f for f in load_bundle(demo["bundle"]).encoder.inputs if f.name == "tags")
    calls = []
    cast = server.pc.cast
    monkeypatch.setattr(server.pc, "cast", lambda *a, **k: calls.append(1) or cast(*a, **k))
    assert server.value_text([1.5, 1e-07, 2.0, 1e20, 3, True, "x", 0.1 + 0.2] + [0.5] * 100, tags) == (
        "1.5;1e-7;2;1e+20;3;1;x;0.30000000000000004" + ";0.5" * 100)
    assert len(calls) == 1


def test_a_float_is_the_text_the_parquet_reader_gives_it(tmp_path):
    """A categorical value is its text: a float beyond 2^53 (an id that pandas stored as float64) was '1e+17' in a
    request and 1e-07 was '1e-07', where the Parquet reader that read the training file gives '100000000000000000'
    and '1e-7': a known category scored as unseen."""
    import pyarrow as pa

    from dlf.data.readers import read_parquet
    from dlf.serve.encoding import InputField
    from dlf.serve.server import value_text
    values = [34.0, -3.0, 0.5, 1 / 3, 2.0 ** 53 + 2, 1e17, -2.0 ** 63, 2.0 ** 64 - 2048, 2.0 ** 64, 1e20, 1e-7, 2e-5,
              12345678901.5, -0.0]
    pq.write_table(pa.table({"x": pa.array(values, pa.float64())}), tmp_path / "f.parquet")
    want = next(read_parquet(tmp_path / "f.parquet", use=["x"])).columns["x"].to_pylist()
    assert [value_text(v, InputField("x", "categorical")) for v in values] == want
    assert value_text([1e17, 0.5], InputField("x", "multi", separator=";")) == "100000000000000000;0.5"
    assert [float(value_text(v, InputField("x", "numeric", number=True))) for v in values] == values


def test_oversized_requests_413(client):
    r = client.post("/predict", json=[{"city": "city1"}] * 51, headers=AUTH)
    assert r.status_code == 413 and "limit of 50" in r.json()["detail"]
    r = client.post("/predict", json=[{"city": "x" * 30_000}], headers=AUTH)
    assert r.status_code == 413 and "20000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the body is read only up to the limit
        for _ in range(100):
            yield b" " * 1000
    r = client.post("/predict", content=chunks(), headers=AUTH)
    assert r.status_code == 413


def test_gzip_request_bodies(client):
    """Content-Encoding: gzip was not decoded (the compressed bytes were parsed as JSON: a 422). The body is decoded as
    it arrives; the size limit applies to the decoded body too, so a small gzip bomb is a 413 that never inflates."""
    import gzip

    records = [{"city": "city1", "age": 30}, {"city": "city2", "tags": ["t1"]}]
    want = client.post("/predict", json=records, headers=AUTH).json()["probabilities"]
    body = json.dumps(records).encode()
    member = gzip.compress(body)
    for encoding, content in (("gzip", member), ("GZIP", member), ("x-gzip", member), ("identity", body),
                              ("gzip", gzip.compress(body[:10]) + gzip.compress(body[10:]))):  # two members
        r = client.post("/predict", content=content, headers=AUTH | {"Content-Encoding": encoding})
        assert r.status_code == 200, (encoding, r.text)
        assert r.json()["probabilities"] == want

    def pieces(data, size=7):  # no Content-Length, sent in small pieces: decoded as it arrives
        for i in range(0, len(data), size):
            yield data[i:i + size]
    r = client.post("/predict", content=pieces(member), headers=AUTH | {"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["probabilities"] == want, r.text
    # 10 MB of spaces compress to ~10 kB (under the 20,000-byte limit): refused once 20,000 bytes are decoded
    bomb = gzip.compress(b"[" + b" " * 10_000_000 + b"]")
    assert len(bomb) < 20_000
    for content in (bomb, pieces(bomb, 1000)):
        r = client.post("/predict", content=content, headers=AUTH | {"Content-Encoding": "gzip"})
        assert r.status_code == 413, r.text
        assert r.json()["detail"] == "request body decompresses to more than the limit of 20000 bytes"
    # a gzip header and empty stored deflate blocks, which decode to nothing: the bytes sent count too
    flood = gzip.compress(b"")[:10] + b"\x00\x00\x00\xff\xff" * 5000
    r = client.post("/predict", content=pieces(flood, 1000), headers=AUTH | {"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "request body is larger" in r.json()["detail"], r.text
    # corrupt, truncated, a CRC that does not match, trailing bytes that are no gzip member: one-line 400s
    bad_crc = member[:-8] + bytes([member[-8] ^ 1]) + member[-7:]
    for content in (body, member[:-4], bad_crc, member + b"junk", b""):
        r = client.post("/predict", content=content, headers=AUTH | {"Content-Encoding": "gzip"})
        assert r.status_code == 400, (content[:20], r.text)
        detail = r.json()["detail"]
        assert detail.startswith("request body is not valid gzip (Content-Encoding: gzip): ") and "\n" not in detail
    # other encodings: 415 naming it, and the one the server decodes
    for encoding in ("br", "deflate", "gzip, br"):
        r = client.post("/predict", content=body, headers=AUTH | {"Content-Encoding": encoding})
        assert r.status_code == 415 and r.headers["accept-encoding"] == "gzip", r.text
        assert r.json()["detail"].startswith(f"Content-Encoding {encoding!r} is not supported")


def test_a_trailing_slash_is_the_same_route(client, caplog):
    """POST /predict/ answered a 307 redirect to /predict (a second round trip, a Location built from the Host header
    behind a proxy, and clients that do not resend a POST body); each route's slash form now answers as the route."""
    records = [{"city": "city1", "age": 30}]
    want = client.post("/predict", json=records, headers=AUTH)
    with caplog.at_level(logging.INFO, logger="dlf.serve.access"):
        r = client.post("/predict/", json=records, headers=AUTH, follow_redirects=False)
    assert r.status_code == 200 and r.json() == want.json(), r.text
    log = [json.loads(x.getMessage()) for x in caplog.records if x.name == "dlf.serve.access"][-1]
    assert (log["path"], log["status"], log["rows"]) == ("/predict/", 200, 1)  # the path as sent
    for method, path, headers in (("POST", "/predict", {}), ("GET", "/predict", AUTH), ("GET", "/health", {}),
                                  ("HEAD", "/health", {}), ("GET", "/metadata", AUTH), ("GET", "/metadata", {})):
        plain = client.request(method, path, headers=headers, follow_redirects=False)
        slash = client.request(method, path + "/", headers=headers, follow_redirects=False)
        assert (slash.status_code, slash.headers.get("content-type")) == (plain.status_code,
                                                                          plain.headers.get("content-type")), path
        if path != "/health":  # (its answer holds the uptime and the request count)
            assert slash.content == plain.content, path
    text = client.get("/metrics/").text
    assert client.get("/metrics/").status_code == 200 and 'dlf_requests_total{path="/predict",method="POST"' in text
    assert 'path="/predict/"' not in text  # counted under the route
    for path in ("/predict//", "/nothing/", "//"):
        assert client.post(path, json=records, headers=AUTH, follow_redirects=False).status_code == 404, path


def test_api_key_401(client):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer nope"}):
        r = client.post("/predict", json=[{"city": "city1"}], headers=headers)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert client.get("/metadata", headers=headers).status_code == 401
    assert client.get("/health").status_code == 200  # probes need no key


def test_a_right_bearer_key_beside_another_x_api_key_header_is_accepted(client):
    """The docs accept a request with an X-API-Key or an Authorization: Bearer header that matches; with both, only
    X-API-Key was compared, so a right bearer key beside a proxy's (or an empty) X-API-Key was a 401."""
    for other in ("", "a-proxys-key"):
        headers = {"X-API-Key": other, "Authorization": f"Bearer {KEY}"}
        assert client.get("/metadata", headers=headers).status_code == 200
    assert client.get("/metadata", headers={"X-API-Key": "", "Authorization": "Bearer nope"}).status_code == 401


def test_an_api_key_beyond_ascii_matches_its_utf8_header(demo):
    """The header's text (its bytes decoded as latin-1) was encoded as UTF-8 and compared with the key's UTF-8: a key
    such as 'clé' never matched, every request was 401."""
    with TestClient(create_app(load_bundle(demo["bundle"]), api_key="clé-ключ")) as c:
        for header in ("X-API-Key", "Authorization"):
            value = ("Bearer " if header == "Authorization" else "") + "clé-ключ"
            r = c.post("/predict", json=[{"city": "city1"}], headers={header: value.encode()})
            assert r.status_code == 200, r.text
        assert c.post("/predict", json=[{}], headers={"X-API-Key": "clé-ключ".encode("latin-1", "replace")}) \
            .status_code == 401


def test_internal_error_500_then_healthy(demo, client, monkeypatch):
    app = create_app(load_bundle(demo["bundle"]))
    with TestClient(app, raise_server_exceptions=False) as c:
        import dlf.serve.encoding as enc
        monkeypatch.setattr(enc.Encoder, "encode_chunk", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        r = c.post("/predict", json=[{"city": "city1"}])
        assert r.status_code == 500 and r.json() == {"detail": "internal error: RuntimeError"}
        monkeypatch.undo()
        assert c.post("/predict", json=[{"city": "city1"}]).status_code == 200
        assert c.get("/health").json()["status"] == "ok"


def test_an_internal_error_is_not_raised_again_to_the_server(demo, monkeypatch):
    """Starlette raised the error again after on_error had answered the 500 and logged it: uvicorn logged a second,
    bare 'Exception in ASGI application' line for each 500 (the docs promise one line). TestClient raises what the
    server would have logged."""
    import dlf.serve.encoding as enc

    monkeypatch.setattr(enc.Encoder, "encode_chunk", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with TestClient(create_app(load_bundle(demo["bundle"]))) as c:
        r = c.post("/predict", json=[{"city": "city1"}])
    assert r.status_code == 500 and r.json() == {"detail": "internal error: RuntimeError"}


def test_health_metadata_metrics_and_access_log(client, caplog):
    with caplog.at_level(logging.INFO, logger="dlf.serve.access"):
        assert client.post("/predict", json=[{"city": "city2", "device": "tablet"}], headers=AUTH).status_code == 200
        assert client.post("/predict", json=[{"age": "x"}], headers=AUTH).status_code == 422
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dlf.serve.access"]
    assert [(x["path"], x["status"], x["rows"]) for x in lines[-2:]] == [("/predict", 200, 1), ("/predict", 422, 0)]
    # the statuses /metrics must count below, whatever other tests ran before on this module's client
    assert client.post("/predict", json=[{"city": "city2"}]).status_code == 401
    assert client.post("/predict", json=[{"city": "city2"}] * 51, headers=AUTH).status_code == 413
    assert {"ts", "method", "duration_ms", "client", "request_id"} <= set(lines[-1])
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["model"] == "dlf"
    assert client.head("/health").status_code == 200  # a probe by HEAD (was 405)
    meta = client.get("/metadata", headers=AUTH).json()
    assert meta["model"]["name"] == "dlf" and meta["limits"] == {"max_batch": 50, "max_body_bytes": 20_000}
    fields = {f["name"]: f for f in meta["fields"]}
    assert fields["age"]["kind"] == "numeric" and fields["age"]["transform"] == "standardize"
    assert fields["tags"]["separator"] == ";" and fields["visits_bucket"]["input"] == "visits"
    assert [i["name"] for i in meta["inputs"]] == ["site", "visits", "city", "device", "age", "tags"]
    text = client.get("/metrics").text
    assert 'dlf_requests_total{path="/predict",method="POST",status="200"}' in text
    for status in ("401", "413", "422"):
        assert f'path="/predict",method="POST",status="{status}"' in text
    assert 'dlf_request_duration_seconds_bucket{path="/predict",le="+Inf"}' in text
    assert "dlf_predicted_rows_total" in text and "process_resident_memory_bytes" in text


def test_the_access_logs_time_is_one_reading_of_the_clock(client, caplog, monkeypatch):
    """The log line's seconds came from gmtime() and its milliseconds from a second time(): a request logged across a
    second boundary read 12:00:00.000Z for 12:00:01.000 (or .999 of the second before). Both come from one reading."""
    import time
    import types

    from dlf.serve import server

    clock = types.SimpleNamespace(time=lambda: 1_000_000_000.9996, gmtime=time.gmtime, strftime=time.strftime,
                                  perf_counter=time.perf_counter)
    monkeypatch.setattr(server, "time", clock)
    with caplog.at_level(logging.INFO, logger="dlf.serve.access"):
        assert client.get("/health").status_code == 200
    line = json.loads([r for r in caplog.records if r.name == "dlf.serve.access"][-1].getMessage())
    assert line["ts"] == "2001-09-09T01:46:40.999Z"


def test_metrics_count_each_fields_values_and_those_unseen_in_training(demo):
    """/metrics: per vocabulary field, the values of the records scored and those unseen in training (a client that
    writes a column otherwise than the training files shows as a jump there); a refused request adds nothing."""
    app = create_app(load_bundle(demo["bundle"]), api_key=KEY)
    with TestClient(app) as c:
        ok = c.post("/predict", headers=AUTH, json=[{"city": "city1", "device": "atlantis-tv"},
                                                    {"city": "nowhere", "tags": ["t1", "zz"], "site": "s1"}])
        assert ok.status_code == 200
        assert c.post("/predict", headers=AUTH, json=[{"city": "elsewhere", "age": "x"}]).status_code == 422
        text = c.get("/metrics").text
    series = re.findall(r'(dlf_field(?:_unseen)?_values_total)\{field="(\w+)"\} (\d+)', text)
    counts = {(metric, name): int(n) for metric, name, n in series}
    assert counts[("dlf_field_values_total", "city")] == 2 and counts[("dlf_field_unseen_values_total", "city")] == 1
    assert counts[("dlf_field_values_total", "device")] == 1
    assert counts[("dlf_field_unseen_values_total", "device")] == 1
    assert counts[("dlf_field_values_total", "tags")] == 2 and counts[("dlf_field_unseen_values_total", "tags")] == 1
    assert not any(name == "site" for _, name in counts)  # hashed: no vocabulary, nothing is unseen
    assert "# TYPE dlf_field_unseen_values_total counter" in text


def test_model_info_names_the_precision(demo):
    """dlf_model_info named the engine but not the precision: a bf16 server's scores (a few tenths of a per cent off
    fp32's) could not be told from an fp32 server's on a dashboard, only by GET /metadata with the API key."""
    with TestClient(create_app(load_bundle(demo["bundle"]), precision="bf16")) as c:
        assert re.search(r'dlf_model_info\{.*engine="torch",precision="bf16"\} 1', c.get("/metrics").text)


def test_metrics_labels_are_escaped_and_bounded():
    """A manifest string with a quote, backslash or newline stays one valid label (it broke the line), and made-up
    methods share one series (each used to add a series for as long as the server runs)."""
    m = Metrics()
    for method in ("BREW", "WHEN", "GET"):
        m.observe("/x", method, 404, 0.01)
    text = m.render({"model": 'a"b\\c\nd'})
    assert 'dlf_model_info{model="a\\"b\\\\c\\nd"} 1' in text
    assert 'dlf_requests_total{path="other",method="other",status="404"} 2' in text
    assert 'dlf_requests_total{path="other",method="GET",status="404"} 1' in text


def test_load_script_runs_against_a_real_server(demo, tmp_path):
    """benchmarks/serve_load.py starts `dlf serve` on 127.0.0.1, drives it briefly and stops it (with gzip bodies:
    uvicorn hands them over as sent)."""
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--bundle", str(demo["bundle"]),
                           "--duration", "1", "--warmup", "0.2", "--concurrency", "2", "--gzip", "--json", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["gzip"] is True
    assert [s["records_per_request"] for s in res["scenarios"]] == [1, 100]
    assert all(s["errors"] == 0 and s["requests"] > 0 and s["p99_ms"] >= s["p50_ms"] for s in res["scenarios"])
    assert res["rss_mib_start"] > 0 and res["rss_mib_end"] > 0


def test_concurrent_requests_are_micro_batched(demo):
    """Requests that arrive while the model is busy are merged into one call, each gets its own answers,
    and a bad request in a merged call does not spoil the others."""
    import threading
    import time

    from dlf.serve.predict import Scorer

    bundle = load_bundle(demo["bundle"])
    solo = TestClient(create_app(bundle, micro_batch=False))
    records = [{"city": f"city{i % 12}", "device": "phone", "age": 20 + i} for i in range(12)]
    want = [solo.post("/predict", json=records[i:i + 2]).json()["probabilities"] for i in range(0, 12, 2)]
    original = Scorer.__call__
    gate = threading.Event()

    def slow(self, batch):  # the first call holds the model until the other requests are queued
        gate.wait(10)
        return original(self, batch)

    app = create_app(bundle)
    with TestClient(app) as c, pytest.MonkeyPatch.context() as mp:
        mp.setattr(Scorer, "__call__", slow)
        answers, threads = {}, []

        def post(i, body):
            answers[i] = c.post("/predict", json=body)
        for i in range(6):
            threads.append(threading.Thread(target=post, args=(i, records[2 * i:2 * i + 2])))
            threads[-1].start()
            if i == 0:
                time.sleep(0.3)  # request 0 is in the model; 1..5 queue up behind it
        threads.append(threading.Thread(target=post, args=(6, [{"age": "x"}])))  # fails validation before queueing
        threads[-1].start()
        time.sleep(0.3)
        gate.set()
        for t in threads:
            t.join(30)
        assert app.app.state.batcher.calls == 2  # request 0, then 1..5 together
        for i in range(6):
            assert answers[i].status_code == 200
            np.testing.assert_allclose(answers[i].json()["probabilities"], want[i], rtol=0, atol=1e-6)
        assert answers[6].status_code == 422
        assert "dlf_model_calls_total 2" in c.get("/metrics").text


def test_metadata_of_a_run_with_an_undefined_test_auc(demo, tmp_path):
    """A one-class test split gives test AUC NaN: the manifest held NaN (not JSON) and GET /metadata was a 500."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo["run"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"]["auc"] = float("nan")
    (run / "metrics.json").write_text(json.dumps(metrics))
    bundle = export_bundle(run, tmp_path / "b")
    json.loads((bundle / "bundle.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in bundle.json"))
    with TestClient(create_app(load_bundle(bundle)), raise_server_exceptions=False) as c:
        r = c.get("/metadata")
        assert r.status_code == 200, r.text
        assert r.json()["test_metrics"]["auc"] is None and r.json()["test_metrics"]["logloss"] > 0


def test_shutdown_waits_a_bounded_time_for_in_flight_requests(demo, monkeypatch):
    """SIGTERM waited for every open request without limit: a client that had sent part of a body (Content-Length 100,
    2 bytes sent) kept `dlf serve` running until an orchestrator's SIGKILL; uvicorn now cancels what is left after a
    grace period."""
    import uvicorn

    from dlf.serve import server

    called = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: called.update(kwargs))
    loggers = [logging.getLogger(name) for name in ("dlf.serve", "dlf.serve.access")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    try:
        server.serve(demo["bundle"], port=0)
    finally:  # serve() gives its loggers a stderr handler of their own: the other tests read them through caplog
        for lg, (handlers, propagate, level) in zip(loggers, saved):
            lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level
    assert called["timeout_graceful_shutdown"] == server.SHUTDOWN_GRACE_SECONDS > 0


@pytest.mark.parametrize("host, key, warned", [("0.0.0.0", None, True), ("10.1.2.3", None, True),
                                               ("0.0.0.0", "k", False), ("127.0.0.1", None, False),
                                               ("::1", None, False), ("localhost", None, False)])
def test_a_server_any_client_can_reach_without_a_key_says_so(demo, monkeypatch, capsys, host, key, warned):
    """An empty DLF_API_KEY (`DLF_API_KEY=` in a compose file) or none at all on 0.0.0.0 served /predict to anyone
    without a word; beyond this machine the start-up log now warns."""
    import uvicorn

    from dlf.serve import server

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.setattr(server, "check_address", lambda host, port: None)  # (10.1.2.3 is no address of this machine)
    loggers = [logging.getLogger(name) for name in ("dlf.serve", "dlf.serve.access")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    try:
        server.serve(demo["bundle"], host=host, port=0, api_key=key)
    finally:
        for lg, (handlers, propagate, level) in zip(loggers, saved):
            lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level
    assert ("no API key: /predict and /metadata answer any client" in capsys.readouterr().err) == warned


def test_a_logged_exception_names_its_type_in_the_json_line():
    """uvicorn logs 'Exception in ASGI application\\n' with the error in exc_info only: the JSON line said nothing of
    it (which error, what message)."""
    from dlf.serve.server import _JsonLines

    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application\n", None,
                                   sys.exc_info())
    line = _JsonLines().format(record)
    assert "\n" not in line and json.loads(line)["msg"] == "Exception in ASGI application: RuntimeError: boom"
