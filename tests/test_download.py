"""`dlf download` against a local HTTP server on 127.0.0.1 and file:// URLs: checksums, resume
after an interrupted transfer, zips unpacked atomically, datasets behind a login explained."""
import hashlib
import http.server
import shlex
import threading
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlf.data import download as dl
from dlf.data.download import Dataset, DownloadError, RemoteFile, fetch, fetch_file

FIX = Path(__file__).parent / "fixtures" / "data"
DATA = bytes(range(256)) * 40  # 10,240 bytes


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files`, honours `Range: bytes=N-`; `server.cut_after` bytes then a dropped connection;
    `server.content_type`: the Content-Type header sent; `server.range_from`: the byte a range answer starts at
    whatever was asked (a server or proxy that gets Range wrong)."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers["Range"] else 0
        if start and srv.range_from is not None:
            start = srv.range_from
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if self.headers["Range"] else 200)
        if srv.content_type:
            self.send_header("Content-Type", srv.content_type)
        if self.headers["Range"]:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body, srv.cut_after = data[start:start + srv.cut_after] if srv.cut_after else data[start:], None
        self.wfile.write(body)  # HTTP/1.0: the connection closes after each response

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.cut_after, srv.content_type, srv.range_from = {}, [], None, None, None
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_verifies_size_and_sha256_then_renames(server, tmp_path):
    server.files["/d.bin"] = DATA
    path = fetch_file(RemoteFile(server.url + "/d.bin", "d.bin", size=len(DATA), checksum=sha256(DATA)), tmp_path,
                      log=lambda m: None)
    assert path == tmp_path / "d.bin" and path.read_bytes() == DATA
    assert [p.name for p in tmp_path.iterdir()] == ["d.bin"]  # no partial file left
    # a complete, verified file is not fetched again
    fetch_file(RemoteFile(server.url + "/d.bin", "d.bin", checksum=sha256(DATA)), tmp_path, log=lambda m: None)
    assert len(server.requests) == 1


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.files["/d.bin"] = DATA
    server.cut_after = 3000
    remote = RemoteFile(server.url + "/d.bin", "d.bin", size=len(DATA), checksum=sha256(DATA))
    with pytest.raises(DownloadError, match="closed after 3,000 of 10,240 bytes; run the same command again to resume"):
        fetch_file(remote, tmp_path, log=lambda m: None)
    assert not (tmp_path / "d.bin").exists() and (tmp_path / ".d.bin.part").stat().st_size == 3000
    fetch_file(remote, tmp_path, log=lambda m: None)
    assert (tmp_path / "d.bin").read_bytes() == DATA and not (tmp_path / ".d.bin.part").exists()
    assert server.requests == [("/d.bin", None), ("/d.bin", "bytes=3000-")]


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    server.files["/d.bin"] = DATA[:-1] + b"!"
    remote = RemoteFile(server.url + "/d.bin", "d.bin", checksum=sha256(DATA))
    with pytest.raises(DownloadError) as err:
        fetch_file(remote, tmp_path, log=lambda m: None)
    got = hashlib.sha256(server.files["/d.bin"]).hexdigest()
    assert f"/d.bin: SHA256 mismatch: expected {sha256(DATA)[7:]}, got {got}" in str(err.value)
    assert "deleted, run the command again" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match=r"d.bin: 10,240 bytes, expected 99"):  # a size that does not match
        server.files["/d.bin"] = DATA
        fetch_file(RemoteFile(server.url + "/d.bin", "d.bin", size=99), tmp_path, log=lambda m: None)


def test_a_partial_file_that_does_not_fit_the_server_s_answer_is_fetched_again(server, tmp_path):
    # the bytes after the partial file were appended whatever range the server sent, and a partial file longer than
    # the file (changed on the server since) was taken as complete: without a published checksum, a corrupt file
    server.files["/d.bin"] = DATA
    remote = RemoteFile(server.url + "/d.bin", "d.bin")
    logs = []
    (tmp_path / ".d.bin.part").write_bytes(DATA[:3000])
    server.range_from = 0  # asked for bytes 3000-, sends 0- as a 206
    fetch_file(remote, tmp_path, log=logs.append)
    assert (tmp_path / "d.bin").read_bytes() == DATA and any("starting over" in m for m in logs)
    assert server.requests == [("/d.bin", "bytes=3000-"), ("/d.bin", None)]
    (tmp_path / "d.bin").unlink()
    (tmp_path / ".d.bin.part").write_bytes(DATA + b"older, longer version")  # 416, the file is 10,240 bytes
    server.range_from = None
    fetch_file(remote, tmp_path, log=logs.append)
    assert (tmp_path / "d.bin").read_bytes() == DATA and not (tmp_path / ".d.bin.part").exists()


def test_file_url_restarts_a_partial_file_it_cannot_resume(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".d.bin.part").write_bytes(b"stale bytes")  # file:// ignores Range: the file is fetched whole
    logs = []
    fetch_file(RemoteFile(src.as_uri(), "d.bin", size=len(DATA), checksum=sha256(DATA)), out, log=logs.append)
    assert (out / "d.bin").read_bytes() == DATA and any("starting over" in m for m in logs)


def test_unreachable_url_says_which_file_to_place_by_hand(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{srv.server_address[1]}/d.bin"
    srv.server_close()  # nothing listens there any more
    with pytest.raises(DownloadError, match=rf"cannot reach {url} .*download {url} by hand, place it at "
                                            rf".*d.bin and run the command again"):
        fetch_file(RemoteFile(url, "d.bin"), tmp_path, log=lambda m: None)


def test_offline_multi_file_dataset_names_every_missing_file_at_once(tmp_path):
    # the error named the first file only: fixing it and running again showed the next one, one per run
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.server_close()  # nothing listens there: offline
    ds = Dataset("tiny", "libfm", ("train=a.libfm", "valid=b.libfm", "test=c.libfm"),
                 files=tuple(RemoteFile(f"{url}/{n}", n) for n in ("a.libfm", "b.libfm", "c.libfm")))
    (tmp_path / "b.libfm").write_text("1 0:1\n")  # placed already: not asked for again
    with pytest.raises(DownloadError) as err:
        fetch(ds, tmp_path, log=lambda m: None)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"cannot reach {url}/a.libfm ")
    assert text.endswith(f"; offline? download these 2 files by hand: {url}/a.libfm to {tmp_path / 'a.libfm'}, "
                         f"{url}/c.libfm to {tmp_path / 'c.libfm'}; then run the command again")


def test_html_page_instead_of_the_file_is_refused(server, tmp_path):
    # a login or error page sent with 200 (a captive portal, a moved file) was saved under the file's name: for a file
    # without a published checksum (frappe.train.libfm, the BARS zips) a complete download, kept by every rerun
    server.files["/d.libfm"] = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match=r"/d.libfm: the server sent a web page \(text/html\), not the file "
                                            r"\(a login or error page\?\); offline\? download .*/d.libfm by hand, "
                                            r"place it at .*d.libfm"):
        fetch_file(RemoteFile(server.url + "/d.libfm", "d.libfm"), tmp_path, log=lambda m: None)
    assert list(tmp_path.iterdir()) == []
    server.content_type = "text/plain; charset=utf-8"  # what raw.githubusercontent.com sends: fine
    server.files["/d.libfm"] = b"1 0:1\n"
    assert fetch_file(RemoteFile(server.url + "/d.libfm", "d.libfm"), tmp_path, log=lambda m: None).exists()


def test_unwritable_destination_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    ds = Dataset("tiny", "libfm", ("d.bin",), files=(RemoteFile(src.as_uri(), "d.bin"),))
    out = tmp_path / "file" / "raw"  # a folder under a file: NotADirectoryError traceback before
    with pytest.raises(DownloadError, match=rf"cannot write the download into {out}: Not a directory: "):
        fetch(ds, out, log=lambda m: None)


def movielens_zip(path: Path) -> bytes:
    """The tiny MovieLens fixture zipped like ml-1m.zip (one top folder ml-1m/)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name in ("ratings.dat", "users.dat", "movies.dat"):
            zf.write(FIX / "movielens_tiny" / name, f"ml-1m/{name}")
    return path.read_bytes()


def test_zip_is_unpacked_checked_and_the_printed_command_preprocesses_it(server, tmp_path, dead_pid):
    data = movielens_zip(tmp_path / "ml.zip")
    server.files["/ml-1m.zip"] = data
    members = {"ratings.dat": sha256((FIX / "movielens_tiny" / "ratings.dat").read_bytes())}
    ds = Dataset("ml", "movielens-1m", ("ml-1m",), files=(
        RemoteFile(server.url + "/ml-1m.zip", "ml-1m.zip", size=len(data), checksum=sha256(data), unpack=True,
                   members=members),))
    out = tmp_path / "raw"
    for kind in ("old", "tmp"):  # what an unpack or a folder swap killed midway left: removed
        (out / f".ml-1m.{kind}-{dead_pid}-0123abcd").mkdir(parents=True)
    command = fetch(ds, out, log=lambda m: None)
    assert (out / "ml-1m" / "ratings.dat").read_bytes() == (FIX / "movielens_tiny" / "ratings.dat").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["ml-1m", "ml-1m.zip"]  # no temporary folder left
    args = shlex.split(command)
    assert args[:4] == ["dlf", "preprocess", "--preset", "movielens-1m"]
    assert args[args.index("--input") + 1] == str(out / "ml-1m")
    from dlf.data.preprocess import preprocess
    result = preprocess("movielens-1m", [args[args.index("--input") + 1]], tmp_path / "data")
    assert result.rows > 0
    # a rerun finds the files and does nothing
    assert fetch(ds, out, log=lambda m: None) == command and len(server.requests) == 1


def test_zip_member_with_a_wrong_checksum_is_not_unpacked(tmp_path):
    data = movielens_zip(tmp_path / "ml.zip")
    ds = Dataset("ml", "movielens-1m", ("ml-1m",), files=(
        RemoteFile((tmp_path / "ml.zip").as_uri(), "ml-1m.zip", unpack=True,
                   members={"ratings.dat": "md5:" + "0" * 32}),))
    out = tmp_path / "raw"
    with pytest.raises(DownloadError, match=r"ml-1m.zip member ratings.dat: MD5 mismatch: expected 0{32}, got"):
        fetch(ds, out, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["ml-1m.zip"] and (out / "ml-1m.zip").read_bytes() == data


def test_login_dataset_says_where_to_get_it_and_what_to_run(tmp_path):
    with pytest.raises(DownloadError) as err:
        dl.download("criteo", tmp_path, log=lambda m: None)
    text = str(err.value)
    assert "kaggle.com/c/criteo-display-ad-challenge" in text and f"extract its train.txt into {tmp_path};" in text
    assert f"then run: dlf preprocess --preset criteo --input {tmp_path / 'train.txt'} --out data/criteo" in text
    (tmp_path / "train.txt").write_text("placed by hand\n")
    assert dl.download("criteo", tmp_path, log=lambda m: None).startswith("dlf preprocess --preset criteo")
    with pytest.raises(DownloadError, match="unknown dataset 'criteo_x9'; available: movielens-1m, frappe"):
        dl.download("criteo_x9", tmp_path)


def test_every_catalog_entry_points_at_an_existing_preset():
    from dlf.data.presets import PRESETS
    for ds in dl.DATASETS.values():
        assert ds.preset in PRESETS and (ds.files or ds.manual), ds.name
        for f in ds.files:
            assert f.url.startswith("https://") and (not f.checksum or f.checksum.split(":")[0] in ("md5", "sha256"))


def test_cli_download(server, tmp_path, monkeypatch):
    from dlf.cli import app
    server.files["/a.libfm"] = b"1 0:1\n"
    ds = Dataset("tiny", "libfm", ("a.libfm",), files=(RemoteFile(server.url + "/a.libfm", "a.libfm"),))
    monkeypatch.setitem(dl.DATASETS, "tiny", ds)
    res = CliRunner().invoke(app, ["download", "tiny", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert f"next: dlf preprocess --preset libfm --input {tmp_path / 'a.libfm'}" in res.output
    res = CliRunner().invoke(app, ["download", "avazu", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "kaggle.com/c/avazu-ctr-prediction" in res.output
