"""`dlf serve BUNDLE --port P`: an HTTP scoring service (FastAPI + uvicorn, the `[serve]` extra).

    POST /predict    body: a JSON list of records (objects of raw input values), or
                     {"records": [...]}; answers {"probabilities": [...], "rows": n, "model": name}
    GET  /health     liveness: {"status": "ok", ...} (no API key needed; HEAD too)
    GET  /metadata   model, bundle and the input fields: names, kinds, transforms, vocab sizes
    GET  /metrics    Prometheus text format: request counts by path/method/status, a latency
                     histogram per path, rows scored, process RSS (no API key needed)

Request checks, in order: API key when one is configured (X-API-Key or `Authorization: Bearer`,
401); Content-Encoding (gzip is decoded as it arrives, another is a 415); body size (413, also for bodies
without Content-Length, read up to the limit only; for gzip, sent and decoded; a corrupt gzip body is a 400);
JSON (422); batch size (413); every record's fields (422 with one entry per problem, e.g.
{"loc": ["body", 3, "age"], "msg": "expected a number, got 'abc'"}). Unknown fields are errors
(typos do not pass silently); an absent field, null or "" is a missing value, encoded as in
training. Values are the raw values the training files held: strings, numbers or booleans
(true/false are "1"/"0", as a Parquet bool column reads); a multi-valued field takes a list or a
separator-joined string.

Each request is logged as one JSON line (logger `dlf.serve.access`: time, method, path, status,
duration, rows, client, request id). An unexpected error answers 500 with one line and the
server keeps serving. Inference runs in a worker thread, one call at a time (the model's own
intra-op threads use the cores); requests that arrive while the model is busy are merged into
the next call (MicroBatcher), so many small concurrent requests cost few model calls.
"""
# no `from __future__ import annotations`: FastAPI reads the endpoints' `Request` annotations at runtime

import asyncio
import collections
import hmac
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dlf.serve.bundle import Bundle
from dlf.serve.encoding import INT_RE, NUMBER_RE, InputField

access_log = logging.getLogger("dlf.serve.access")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = ("/predict", "/health", "/metadata", "/metrics")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_ERRORS = 50
MAX_MESSAGE = 200  # characters of an error message (see _clip)
RECORD_ERROR = re.compile(r"""record row (\d+): (?:field (?:'([^']*)'|"([^"]*)"):)?""")  # the encoder's bad-row text
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BODY_BYTES = 4 << 20
# after SIGTERM/Ctrl-C, how long in-flight requests may take before uvicorn cancels them and exits: a client that sent
# part of a body kept the server waiting for it forever (until an orchestrator's SIGKILL, after its own grace period)
SHUTDOWN_GRACE_SECONDS = 20


class RequestError(Exception):
    def __init__(self, status: int, detail) -> None:
        super().__init__(str(detail))
        self.status, self.detail = status, detail


# ---- metrics -----------------------------------------------------------------------------------

class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format (no client library)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, list] = {}  # path -> [bucket counts..., sum, count]
        self.rows = 0
        self.calls = 0
        self.values: dict[str, list[int]] = {}  # vocabulary field -> [values scored, of them unseen in training]
        self.started = time.time()

    def model_call(self) -> None:
        with self.lock:
            self.calls += 1

    def observe_values(self, counts: dict) -> None:
        """UnseenCounts.counts of records scored: a field whose unseen share jumps (a client that sends an id as
        283.0, a new app version's values) shows in /metrics before anyone reads the scores."""
        with self.lock:
            for name, (values, unseen, _) in counts.items():
                c = self.values.setdefault(name, [0, 0])
                c[0] += values
                c[1] += unseen

    def observe(self, path: str, method: str, status: int, seconds: float, rows: int = 0) -> None:
        # labels from a fixed set: a client's made-up paths or methods must not grow the series without bound
        path = path if path in ROUTES else "other"
        method = method if method in METHODS else "other"
        with self.lock:
            key = (path, method, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.latency.setdefault(path, [0] * len(LATENCY_BUCKETS) + [0.0, 0])
            for i, b in enumerate(LATENCY_BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1
            self.rows += rows

    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def render(self, info: dict) -> str:
        lines = ["# HELP dlf_requests_total HTTP requests by path, method and status code.",
                 "# TYPE dlf_requests_total counter"]
        with self.lock:
            for (path, method, status), n in sorted(self.requests.items()):
                lines.append(f'dlf_requests_total{{path="{path}",method="{method}",status="{status}"}} {n}')
            lines += ["# HELP dlf_request_duration_seconds Request latency in seconds.",
                      "# TYPE dlf_request_duration_seconds histogram"]
            for path, h in sorted(self.latency.items()):
                for b, n in zip(LATENCY_BUCKETS, h):
                    lines.append(f'dlf_request_duration_seconds_bucket{{path="{path}",le="{b}"}} {n}')
                lines.append(f'dlf_request_duration_seconds_bucket{{path="{path}",le="+Inf"}} {h[-1]}')
                lines.append(f'dlf_request_duration_seconds_sum{{path="{path}"}} {h[-2]:.6f}')
                lines.append(f'dlf_request_duration_seconds_count{{path="{path}"}} {h[-1]}')
            rows, calls = self.rows, self.calls
            values = sorted(self.values.items())
        for metric, i, text in (("dlf_field_values_total", 0, "Values (not missing) of each vocabulary field in the "
                                 "records scored."),
                                ("dlf_field_unseen_values_total", 1, "Of them, values unseen in training (scored as "
                                 "out of vocabulary).")):
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
            lines += [f'{metric}{{field="{_label_value(name)}"}} {c[i]}' for name, c in values]
        labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in info.items())
        lines += ["# HELP dlf_predicted_rows_total Records scored.", "# TYPE dlf_predicted_rows_total counter",
                  f"dlf_predicted_rows_total {rows}",
                  "# HELP dlf_model_calls_total Model calls (concurrent requests are merged into one call).",
                  "# TYPE dlf_model_calls_total counter", f"dlf_model_calls_total {calls}",
                  "# HELP dlf_model_info The model being served.", "# TYPE dlf_model_info gauge",
                  f"dlf_model_info{{{labels}}} 1",
                  "# HELP process_resident_memory_bytes Resident memory of the server process.",
                  "# TYPE process_resident_memory_bytes gauge",
                  f"process_resident_memory_bytes {rss_bytes()}",
                  "# HELP process_start_time_seconds Start time of the server (Unix time).",
                  "# TYPE process_start_time_seconds gauge",
                  f"process_start_time_seconds {self.started:.3f}"]
        return "\n".join(lines) + "\n"


def _label_value(value) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped (the manifest's strings are free text)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (0 where /proc is not available)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ---- request validation --------------------------------------------------------------------------

def _arrow_texts(values: list) -> dict:
    """{float: its text as Arrow casts a float64 column to string} for the finite floats among `values`, in one Arrow
    call: a call per item took 5 s of CPU for a list of 300,000 floats (1.5 MB, a few kilobytes gzip-compressed)."""
    floats = [v for v in values if type(v) is float and math.isfinite(v)]
    return dict(zip(floats, pc.cast(pa.array(floats, pa.float64()), pa.string()).to_pylist()))


def _scalar(value, category: bool = False, texts: dict | None = None) -> str:
    """A JSON scalar -> the text a training file would hold; category: the text itself is the value (a categorical
    field's or a list's item), not a number to parse; texts: `_arrow_texts` of the list the value is in."""
    if isinstance(value, bool):  # before int (bool is one): "1"/"0", as dlf.data.readers reads a Parquet bool column
        return "1" if value else "0"
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # JSON's \ud800 escapes decode to lone surrogates, which are no text
        except UnicodeEncodeError as exc:
            raise ValueError(f"expected valid Unicode text, got a lone surrogate "
                             f"{value[exc.start]!r} at position {exc.start}") from None
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        # as the Parquet reader writes a float64 column (ids that pandas stored as floats): an integral value within
        # int64/uint64 as the integer (34.0 -> "34", 1e17 -> "100000000000000000", which was '1e+17', an unseen
        # category), another in Arrow's notation (1e-07 -> "1e-7"); a number's notation does not matter
        if value.is_integer() and -2.0 ** 63 <= value < 2.0 ** 64:
            return str(int(value))
        return (texts or _arrow_texts([value]))[value] if category else repr(value)
    raise ValueError(f"expected a string or a number, got {type(value).__name__}")


def value_text(value, f: InputField) -> str:
    """One JSON value of an input field -> the text a training file would have held ('' = missing)."""
    if value is None:
        return ""
    if f.kind == "multi":
        if isinstance(value, list):
            items, texts = [], _arrow_texts(value)
            for item in value:
                if item is None or isinstance(item, (list, dict)):
                    raise ValueError(f"list items must be strings, numbers or booleans, got {json.dumps(item)}")
                text = _scalar(item, category=True, texts=texts)
                if f.separator and f.separator in text:
                    raise ValueError(f"list item {text!r} contains the separator {f.separator!r}")
                items.append(text)
            return (f.separator or "|").join(items)
        if isinstance(value, dict):
            raise ValueError("expected a list of values or a separator-joined string, got an object")
        return _scalar(value, category=True)
    if isinstance(value, (list, dict)):
        raise ValueError(f"expected a single value, got {'a list' if isinstance(value, list) else 'an object'}")
    text = _scalar(value, category=not f.number)
    if f.integer and text.strip() and not INT_RE.match(text):
        raise ValueError(f"expected an integer id, got {value!r}")
    if f.number and text.strip() and not NUMBER_RE.match(text):
        raise ValueError(f"expected a number, got {value!r}")
    return text


def validate_records(payload, inputs: list[InputField], max_batch: int) -> list[dict[str, str]]:
    """The request body (parsed JSON) -> records of text values; RequestError(413/422) otherwise."""
    if isinstance(payload, dict) and set(payload) == {"records"}:
        payload = payload["records"]
    if not isinstance(payload, list):
        raise RequestError(422, [{"loc": ["body"], "msg": "expected a JSON list of records (objects of field "
                                  "values), or {\"records\": [...]}", "type": "type_error.list"}])
    if not payload:
        raise RequestError(422, [{"loc": ["body"], "msg": "no records: send at least one", "type": "value_error"}])
    if len(payload) > max_batch:
        raise RequestError(413, f"batch of {len(payload)} records is larger than the limit of {max_batch}; "
                                "split it into smaller requests")
    by_name = {f.name: f for f in inputs}
    names = ", ".join(by_name)
    errors, out = [], []
    for i, rec in enumerate(payload):
        if not isinstance(rec, dict):
            errors.append({"loc": ["body", i], "msg": "expected an object of field values", "type": "type_error.dict"})
            continue
        row = {}
        for key, value in rec.items():
            if len(errors) >= MAX_ERRORS:  # one record of 300,000 unknown keys took a second of the event loop
                break
            f = by_name.get(key)
            if f is None:
                key = _clip(key.encode("utf-8", "backslashreplace").decode("utf-8"))  # the answer must encode
                errors.append({"loc": ["body", i, key], "msg": f"unknown field; the inputs are: {names}",
                               "type": "value_error.unknown_field"})
                continue
            try:
                row[key] = value_text(value, f)
            except ValueError as exc:
                errors.append({"loc": ["body", i, key], "msg": _clip(str(exc)), "type": "value_error"})
        out.append(row)
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise RequestError(422, errors[:MAX_ERRORS])
    return out


class GzipBody:
    """Decodes a gzip request body as it arrives (RFC 1952; several members one after the other too, as
    `gzip.decompress` reads them) and refuses it (413) as soon as it decodes to more than `limit` bytes: a body of a
    few kilobytes that inflates to gigabytes (a gzip bomb) never gets more than `limit` + 1 bytes out."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.inflate = zlib.decompressobj(wbits=31)  # 31: gzip's header and trailer (CRC-32, size), not zlib's

    def decode(self, data: bytes) -> bytes:
        out = []
        while data:
            if self.inflate.eof:  # another member follows
                self.inflate = zlib.decompressobj(wbits=31)
            try:  # never more than one byte past the limit (max_length 0 would mean no limit: room is >= 1 here)
                part = self.inflate.decompress(data, self.limit + 1 - self.size)
            except zlib.error as exc:
                raise RequestError(400, f"request body is not valid gzip (Content-Encoding: gzip): {exc}") from None
            self.size += len(part)
            if self.size > self.limit:
                raise RequestError(413, f"request body decompresses to more than the limit of {self.limit} bytes")
            out.append(part)
            # input left over: a next member's bytes (inflate.eof), or none (below the limit, all input is consumed)
            data = self.inflate.unused_data if self.inflate.eof else self.inflate.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        if not self.inflate.eof:
            raise RequestError(400, "request body is not valid gzip (Content-Encoding: gzip): it ends before the end "
                                    "of its compressed data")


# ---- the app -------------------------------------------------------------------------------------

class AccessLog:
    """ASGI middleware: one JSON log line and the metrics for every HTTP request; a path with a trailing slash
    (`/predict/`) is served as the path without it."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        sent_path = scope["path"]
        if len(sent_path) > 1 and sent_path.endswith("/"):  # FastAPI answered a 307 redirect to the path without it
            scope = dict(scope, path=sent_path[:-1])
        counters = scope["dlf"] = {"rows": 0}  # shared with the endpoint even if the scope is copied

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"], status["answered"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Starlette raises an error again once on_error has answered the 500 and logged it, and uvicorn logged it
            # once more as a bare 'Exception in ASGI application' (two error lines per 500, the second saying nothing)
            if not (status.get("answered") and status["code"] == 500):
                raise
        finally:
            seconds = time.perf_counter() - started
            rows = counters["rows"]
            self.metrics.observe(scope["path"], scope["method"], status["code"], seconds, rows)
            client = scope.get("client")
            now = time.time()  # one reading: gmtime() and a second time() could straddle a second (12:00:00.999Z)
            access_log.info(json.dumps({
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
                "method": scope["method"], "path": sent_path, "status": status["code"],
                "duration_ms": round(seconds * 1000, 3), "rows": rows,
                "client": f"{client[0]}:{client[1]}" if client else None, "request_id": request_id}))


class MicroBatcher:
    """Merges the records of concurrent /predict requests into one model call.

    Opportunistic: a request that arrives while the model is idle is scored at once (no waiting
    window, so no added latency at low load); requests that arrive while a call is running queue
    up and the next call takes all of them (up to `max_rows` records). If a merged call fails on
    bad input, its requests are scored one by one so that each gets its own answer or error.
    """

    def __init__(self, score_many, max_rows: int) -> None:
        self.score_many, self.max_rows = score_many, max_rows
        self.pending: collections.deque = collections.deque()
        self.loop = self.task = self.wake = None
        self.calls = 0

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is None or self.loop is not loop or self.task.done():
            self.loop, self.wake = loop, asyncio.Event()
            self.task = loop.create_task(self._run())

    async def submit(self, records: list):
        self._ensure_running()
        future = self.loop.create_future()
        self.pending.append((records, future))
        self.wake.set()
        return await future

    async def _run(self) -> None:
        from starlette.concurrency import run_in_threadpool

        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch, rows = [], 0
                while self.pending and (not batch or rows + len(self.pending[0][0]) <= self.max_rows):
                    records, future = self.pending.popleft()
                    if not future.done():  # a client that went away
                        batch.append((records, future))
                        rows += len(records)
                if not batch:
                    continue
                self.calls += 1
                try:
                    results = await run_in_threadpool(self.score_many, [r for r, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)


def create_app(bundle: Bundle, *, api_key: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, engine: str = "torch", threads: int = 0,
               micro_batch: bool = True, precision: str = "fp32"):
    """The FastAPI application serving `bundle` (see module doc)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.concurrency import run_in_threadpool

    from dlf.data.readers import BadRows
    from dlf.data.schema import DataError
    from dlf.serve.encoding import UnseenCounts
    from dlf.serve.predict import Scorer, drop_unscorable

    if max_batch < 1 or max_body_bytes < 1:
        raise ValueError("max_batch and max_body_bytes must be >= 1")
    scorer = Scorer(bundle, engine, batch_size=max(max_batch, 1), threads=threads, precision=precision)
    encoder = bundle.encoder
    metrics = Metrics()
    inference = threading.Lock()
    meta = bundle.metadata() | {"engine": engine, "precision": precision,
                                "limits": {"max_batch": max_batch, "max_body_bytes": max_body_bytes},
                                "api_key_required": bool(api_key)}
    info = {"model": bundle.model_name, "dlf_version": bundle.manifest["dlf_version"],
            "bundle_format": str(bundle.manifest["format_version"]), "engine": engine, "precision": precision}
    key = api_key.encode() if api_key else None

    # redirect_slashes off: AccessLog serves /predict/ as /predict; /predict// is a 404, not a redirect to /predict/
    app = FastAPI(title="dlf scoring server", version=bundle.manifest["dlf_version"], docs_url=None, redoc_url=None,
                  openapi_url=None, redirect_slashes=False)

    def check_key(request: Request) -> None:
        if key is None:
            return
        auth = request.headers.get("authorization", "")
        # either header may hold the key: a right `Authorization: Bearer` beside another X-API-Key (a proxy's, or an
        # empty one) was a 401
        given = [request.headers.get("x-api-key"), auth[7:].strip() if auth.lower().startswith("bearer ") else None]
        # the header's bytes as sent (Starlette decodes them as latin-1): a UTF-8 key such as 'clé' never matched
        if not any(g is not None and hmac.compare_digest(g.encode("latin-1"), key) for g in given):
            raise RequestError(401, "missing or wrong API key (send it in the X-API-Key header)")

    async def read_body(request: Request) -> bytes:
        """The body as sent, or decoded from gzip as it arrives; both the sent and the decoded size are limited."""
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):  # x-gzip: gzip's old name (RFC 9110)
            raise RequestError(415, f"Content-Encoding {encoding!r} is not supported: send the body as it is or "
                                    "gzip-compressed (Content-Encoding: gzip)")
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(400, "bad Content-Length header")
            if int(length) > max_body_bytes:
                raise RequestError(413, f"request body of {int(length)} bytes is larger than the limit of "
                                        f"{max_body_bytes} bytes")
        gunzip = GzipBody(max_body_bytes) if "gzip" in encoding else None
        body, received = bytearray(), 0
        async for part in request.stream():
            received += len(part)
            if received > max_body_bytes:
                raise RequestError(413, f"request body is larger than the limit of {max_body_bytes} bytes")
            body += gunzip.decode(part) if gunzip else part
        if gunzip:
            gunzip.finish()
        return bytes(body)

    def parse_records(body: bytes) -> list[dict[str, str]]:
        try:
            payload = json.loads(body, object_pairs_hook=_unique_keys, parse_int=_json_int)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(422, [{"loc": ["body"], "msg": f"invalid JSON: {str(exc).splitlines()[0]}",
                                      "type": "value_error.json"}]) from None
        except RecursionError:  # '[[[[...' a few thousand deep: json's recursive parser gives up (was a 500)
            raise RequestError(422, [{"loc": ["body"], "msg": "invalid JSON: nested too deeply (records are "
                                      "objects of field values)", "type": "value_error.json"}]) from None
        return validate_records(payload, encoder.inputs, max_batch)

    def score(records: list[dict[str, str]]):
        bad = BadRows("skip")
        chunk = encoder.records_chunk(records, "record")
        unseen = UnseenCounts()
        batch, keep = encoder.encode_chunk(chunk, bad, unseen=unseen)
        if not bad.count:
            with inference:
                metrics.model_call()
                probs = scorer(batch)
            probs, _ = drop_unscorable(probs, batch, keep, chunk, encoder.numeric_columns, bad)
        if bad.count:
            raise RequestError(422, [_record_error(e) for e in bad.examples])
        metrics.observe_values(unseen.counts)  # scored: a failed merged call is scored again request by request
        return probs

    def score_many(requests: list[list[dict[str, str]]]) -> list:
        """Score several requests' records in one call; results (or exceptions) per request."""
        if len(requests) == 1:
            return [score(requests[0])]
        try:
            probs = score([r for records in requests for r in records])
        except (RequestError, DataError):  # bad input somewhere: score each request on its own
            results = []
            for records in requests:
                try:
                    results.append(score(records))
                except (RequestError, DataError) as exc:
                    results.append(exc)
            return results
        bounds = np.cumsum([0] + [len(r) for r in requests])
        return [probs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    batcher = MicroBatcher(score_many, max_batch) if micro_batch else None

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError):
        # 415: the encodings the server decodes (RFC 7694)
        headers = {401: {"WWW-Authenticate": "ApiKey"}, 415: {"Accept-Encoding": "gzip"}}.get(exc.status)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception):
        logging.getLogger("dlf.serve").error("error on %s %s: %s", request.method, request.url.path, _error_line(exc))
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.post("/predict")
    async def predict(request: Request):
        check_key(request)
        # in a worker thread: a 1.5 MB list of 300,000 floats in a multi-valued field took 5 s to check, during which
        # the event loop answered nothing (/health, /metrics, other clients)
        records = await run_in_threadpool(parse_records, await read_body(request))
        try:
            if batcher is not None:
                probs = await batcher.submit(records)
            else:
                probs = await run_in_threadpool(score, records)
        except DataError as exc:
            raise RequestError(422, [{"loc": ["body"], "msg": _clip(str(exc)), "type": "value_error"}]) from None
        request.scope.get("dlf", {})["rows"] = len(records)
        return {"probabilities": probs.tolist(), "rows": len(records), "model": bundle.model_name}

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: load balancers' and curl -I's probes (was 405)
    async def health():
        return {"status": "ok", "model": bundle.model_name, "uptime_seconds": round(time.time() - metrics.started, 3),
                "requests": metrics.total()}

    @app.get("/metadata")
    async def metadata(request: Request):
        check_key(request)
        return meta

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(info), media_type="text/plain; version=0.0.4")

    app.state.metrics = metrics
    app.state.batcher = batcher
    return AccessLog(app, metrics)


def _unique_keys(pairs: list) -> dict:
    """A JSON object as a dict, refusing a key given twice: json keeps the last value silently, so
    {"city": "a", "city": "b"} scored city b (RFC 8259 leaves duplicate names' meaning open)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        twice = next(k for k, n in collections.Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"key {twice!r} appears twice in one object")
    return obj


def _json_int(text: str) -> str:
    """A JSON integer as its text, which `value_text` makes of an int anyway (JSON has no leading zeros, so the text is
    str(int(text)) but for -0): int() refuses more than 4,300 digits, and a 5,000-digit id was a 422 that told the
    client to call sys.set_int_max_str_digits(); as text it is an unseen category, or a number out of range."""
    return "0" if text == "-0" else text


def _record_error(message: str) -> dict:
    """The encoder's 'record row 3: field 'age': expected ...' -> loc ["body", 3, "age"] (the chunk's row unit is the
    record index) and msg 'expected ...', as the request checks give them: a client maps the error to the field (loc
    was ["body", 3] only), and the message does not repeat the location in the encoder's words."""
    m = RECORD_ERROR.match(message)
    if m is None:
        return {"loc": ["body"], "msg": _clip(message), "type": "value_error"}
    field = m.group(2) if m.group(2) is not None else m.group(3)
    return {"loc": ["body", int(m.group(1))] + ([field] if field is not None else []),
            "msg": _clip(message[m.end():].strip()), "type": "value_error"}


def _clip(message: str) -> str:
    """An error message cut to MAX_MESSAGE characters: messages quote the value, and a request of a few long values
    (a megabyte of text where a number belongs) got them all back, a 422 as large as the request."""
    return message if len(message) <= MAX_MESSAGE else f"{message[:MAX_MESSAGE]}... ({len(message):,} characters)"


def _error_line(exc: BaseException) -> str:
    """'TypeName: the message's first line' (up to 300 characters): a log line, not a traceback."""
    line = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name == access_log.name:
            return msg
        if record.exc_info and record.exc_info[1] is not None:
            # uvicorn's 'Exception in ASGI application' (an error outside the endpoints' handler, a request cancelled
            # at shutdown) carries the error only in exc_info, which this one-line format left out: it said nothing
            msg = f"{msg.strip()}: {_error_line(record.exc_info[1])}"
        return json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                           "level": record.levelname.lower(), "logger": record.name, "msg": msg})


def check_address(host: str, port: int) -> None:
    """Bind host:port once and let go, so that a port in use or a host that is not this machine's is one line before
    the bundle loads (uvicorn logs it and exits with status 3 after start-up)."""
    from dlf.data.schema import DataError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
            sock.bind(infos[0][4])
    except OSError as exc:
        raise DataError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _loopback(host: str) -> bool:
    """An address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def serve(bundle_path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_batch: int = DEFAULT_MAX_BATCH, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, engine: str = "torch",
          threads: int = 0, log_level: str = "info", access_logs: bool = True, micro_batch: bool = True,
          precision: str = "fp32") -> None:
    """Load the bundle and run the server until interrupted (uvicorn, one process)."""
    import uvicorn

    from dlf.serve.bundle import load_bundle

    check_address(host, port)
    if threads:
        import torch
        torch.set_num_threads(threads)
    bundle = load_bundle(bundle_path, build_model=engine == "torch")
    app = create_app(bundle, api_key=api_key, max_batch=max_batch, max_body_bytes=max_body_bytes, engine=engine,
                     threads=threads, micro_batch=micro_batch, precision=precision)
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonLines())
    for name in ("dlf.serve", "dlf.serve.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
        lg.setLevel(logging.INFO if (access_logs or name == "dlf.serve") else logging.WARNING)
    url_host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL is bracketed (was http://::1:8000)
    logging.getLogger("dlf.serve").info("serving %s (%s, %s engine, %s) on http://%s:%d", bundle_path,
                                        bundle.model_name, engine, precision, url_host, port)
    for warning in bundle.warnings:
        logging.getLogger("dlf.serve").warning(warning)
    if api_key is None and not _loopback(host):  # (an empty DLF_API_KEY, as a compose file's `DLF_API_KEY=`, is none)
        logging.getLogger("dlf.serve").warning(f"no API key: /predict and /metadata answer any client that reaches "
                                               f"{host}; set DLF_API_KEY or --api-key")
    level = log_level.upper()
    log_config = {"version": 1, "disable_existing_loggers": False,
                  "formatters": {"json": {"()": _JsonLines}},
                  "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                           "stream": "ext://sys.stderr"}},
                  "loggers": {"uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
                              "uvicorn.error": {"handlers": ["default"], "level": level, "propagate": False},
                              "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False}}}
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False,
                log_config=log_config, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
