"""`dlf download NAME --out DIR`: fetch a public CTR dataset from its official source.

Each file streams into a hidden `.NAME.part` beside its target and is renamed into place only
when complete and matching its published size and checksum; a download that stops (connection
lost, killed) resumes where it stopped on the next run (HTTP Range). A zip is extracted into a
temporary folder that replaces `DIR/<zip name>/` only when complete. Datasets behind a login
(Kaggle) are not fetched: the error says where to get the files, where to put them, and the
`dlf preprocess` command to run. Standard library only (urllib).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shlex
import shutil
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dlf._io import publish_dir, remove_dead_siblings

BLOCK = 1 << 20  # bytes read and written at a time
TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """A dataset that could not be fetched; the message says why and what to do."""


class NotFetched(DownloadError):
    """The server did not send a file (offline, an HTTP error, a web page instead): the message says to fetch it
    by hand; `reason` is the message without that advice, so that `fetch` can name every missing file at once."""

    def __init__(self, reason: str, remote: RemoteFile, out: Path) -> None:
        super().__init__(f"{reason}{_by_hand([remote], out)}")
        self.reason = reason


@dataclass(frozen=True)
class RemoteFile:
    url: str
    name: str  # file name under --out
    size: int | None = None  # bytes, when published
    checksum: str | None = None  # "sha256:HEX" or "md5:HEX", when published
    unpack: bool = False  # a zip, extracted into --out/<name without .zip>/
    members: dict[str, str] = field(default_factory=dict)  # file in the zip -> its published checksum


@dataclass(frozen=True)
class Dataset:
    name: str
    preset: str  # the `dlf preprocess --preset` that reads it
    inputs: tuple[str, ...]  # `--input` values of that command, relative to --out ("ROLE=PATH" allowed)
    files: tuple[RemoteFile, ...] = ()  # empty: no public URL, fetched by hand
    manual: str = ""  # where to get the files by hand; {out} is the --out folder

    def input_paths(self, out: Path) -> list[Path]:
        return [out / item.partition("=")[2] if "=" in item else out / item for item in self.inputs]

    def command(self, out: Path) -> str:
        """The `dlf preprocess` command for the files under `out`."""
        args = ["dlf", "preprocess", "--preset", self.preset]
        for item in self.inputs:
            role, sep, rel = item.partition("=")
            args += ["--input", f"{role}={out / rel}" if sep else str(out / item)]
        return shlex.join(args + ["--out", f"data/{self.name}"])


_FRAPPE = "https://raw.githubusercontent.com/hexiangnan/neural_factorization_machine/master/data/frappe/"
_RECZOO = "https://huggingface.co/datasets/reczoo/{0}/resolve/main/{0}.zip"

DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("movielens-1m", "movielens-1m", ("ml-1m",), files=(
        RemoteFile("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m.zip",
                   checksum="md5:c4d9eecfca2ab87c1945afe126590906", unpack=True),)),
    # the libFM split of the NFM/AFN papers; sizes and SHA-256 of the two smaller files as released
    Dataset("frappe", "frappe", ("train=frappe.train.libfm", "valid=frappe.validation.libfm",
                                 "test=frappe.test.libfm"), files=(
        RemoteFile(_FRAPPE + "frappe.train.libfm", "frappe.train.libfm"),
        RemoteFile(_FRAPPE + "frappe.validation.libfm", "frappe.validation.libfm", size=4163044,
                   checksum="sha256:fdf4be563a7dd9b15f7a6e8b32671e90e6e7a2a2bd3af4e10bf13c5ad7e76e9e"),
        RemoteFile(_FRAPPE + "frappe.test.libfm", "frappe.test.libfm", size=2081389,
                   checksum="sha256:a2ebaef3a9af8e55f8bb0d08bc4923965e42e43760ebd7635ac2f8c5db99e097"))),
    # the BARS splits (public on Hugging Face; the raw Kaggle data needs a login); MD5s from reczoo/Datasets
    Dataset("kkbox", "kkbox", ("KKBox_x1",), files=(
        RemoteFile(_RECZOO.format("KKBox_x1"), "KKBox_x1.zip", unpack=True, members={
            "train.csv": "md5:195b1ae8fc2d9267d7c8656c07ea1304", "valid.csv": "md5:398e97ac139611a09bd61a58e4240a3e",
            "test.csv": "md5:8c5f7add05a6f5258b6b3bcc00ba640b"}),)),
    Dataset("ipinyou", "ipinyou", ("iPinYou_x1",), files=(
        RemoteFile(_RECZOO.format("iPinYou_x1"), "iPinYou_x1.zip", unpack=True, members={
            "train.csv": "md5:9dd8979d265ab1ed7662ffd49fd73247",
            "test.csv": "md5:a94374868687794ff8c0c4d0b124a400"}),)),
    Dataset("criteo", "criteo", ("train.txt",), manual=(
        "Criteo's Display Advertising Challenge data needs a Kaggle login: download dac.tar.gz from "
        "https://www.kaggle.com/c/criteo-display-ad-challenge/data (or Criteo AI Lab's download page) and "
        "extract its train.txt into {out}")),
    Dataset("avazu", "avazu", ("train.csv",), manual=(
        "Avazu's CTR data needs a Kaggle login: download train.gz from "
        "https://www.kaggle.com/c/avazu-ctr-prediction/data and unpack it: `gunzip -c train.gz > {out}/train.csv`")),
    Dataset("kdd12", "kdd12", ("training.txt",), manual=(
        "KDD Cup 2012 track 2 needs a Kaggle login: download track2.zip from "
        "https://www.kaggle.com/c/kddcup2012-track2/data and extract training.txt and userid_profile.txt into {out}")),
]}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name]


def download(name: str, out: str | Path, log: Callable[[str], None] = print) -> str:
    """Fetch dataset `name` into `out` (nothing to do when its files are there) and return the
    `dlf preprocess` command that reads it."""
    return fetch(get_dataset(name), out, log)


def fetch(ds: Dataset, out: str | Path, log: Callable[[str], None] = print) -> str:
    out = Path(out)
    command = ds.command(out)
    if all(p.exists() for p in ds.input_paths(out)):
        log(f"{ds.name}: already in {out}")
        return command
    if not ds.files:
        raise DownloadError(f"{ds.manual.format(out=out)}; then run: {command}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for i, remote in enumerate(ds.files):
            try:
                path = fetch_file(remote, out, log)
            except NotFetched as exc:  # offline, the others would fail too: name them all, not one per run
                missing = [remote] + [r for r in ds.files[i + 1:] if not (out / r.name).exists()]
                raise DownloadError(f"{exc.reason}{_by_hand(missing, out)}") from None
            if remote.unpack:
                unpack(path, remote, out / path.name.removesuffix(".zip"), log)
    except OSError as exc:  # network errors are DownloadErrors by now: this is the disk (a file in the path, no space)
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise DownloadError(f"cannot write the download into {out}: {reason}") from None
    return command


def fetch_file(remote: RemoteFile, out: Path, log: Callable[[str], None] = print) -> Path:
    """`out/remote.name`, downloaded (or resumed) unless it is there already, and verified."""
    target = out / remote.name
    if target.exists():
        try:
            _verify(target, remote, str(target))
        except DownloadError as exc:
            raise DownloadError(f"{exc}; delete it and run the command again") from None
        return target
    part = out / f".{remote.name}.part"
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    headers = {"User-Agent": "dlf-download"} | ({"Range": f"bytes={have}-"} if have else {})
    log(f"downloading {remote.url} -> {target}" + (f" (resuming at byte {have:,})" if have else ""))
    try:
        response = urllib.request.urlopen(urllib.request.Request(remote.url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:  # 416: nothing left to send after byte `have`
            raise NotFetched(f"{remote.url}: HTTP {exc.code} {exc.reason}", remote, out) from None
        if _content_range(exc.headers)[1] not in (None, have):  # the file is shorter than the partial one
            return _start_over(remote, out, part, log)
        response = None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotFetched(f"cannot reach {remote.url} ({reason})", remote, out) from None
    if response is not None:
        with response:
            if response.headers.get_content_type() == "text/html":  # no dataset file is a web page
                raise NotFetched(f"{remote.url}: the server sent a web page (text/html), not the file (a login or "
                                 "error page?)", remote, out)
            partial = getattr(response, "status", None) == 206  # file:// and some servers send it all (200)
            first, total = _content_range(response.headers) if partial else (None, None)
            if have and partial and first not in (None, have):  # not the bytes after the partial file
                return _start_over(remote, out, part, log)
            resume = have > 0 and partial
            if have and not resume:
                log("the server does not resume downloads; starting over")
            length = response.headers.get("Content-Length")
            expected = total or (int(length) + (have if resume else 0) if length and length.isdigit() else remote.size)
            with open(part, "ab" if resume else "wb") as fh:
                try:
                    while block := response.read(BLOCK):
                        fh.write(block)
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"{remote.url}: interrupted after {fh.tell():,} bytes ({exc}); run the "
                                        "same command again to resume") from None
                got = fh.tell()
        if expected is not None and got < expected:
            raise DownloadError(f"{remote.url}: the connection closed after {got:,} of {expected:,} bytes; run the "
                                "same command again to resume")
    try:
        _verify(part, remote, remote.url)
    except DownloadError as exc:
        part.unlink()
        raise DownloadError(f"{exc}; the download was deleted, run the command again to fetch it afresh") from None
    os.replace(part, target)
    log(f"wrote {target} ({target.stat().st_size:,} bytes)")
    return target


def _content_range(headers) -> tuple[int | None, int | None]:
    """(first byte, file size) of a Content-Range header, 'bytes FIRST-LAST/SIZE' or 'bytes */SIZE' (None: unsaid)."""
    m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (headers.get("Content-Range") or "").strip())
    if m is None:
        return None, None
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] != "*" else None)


def _start_over(remote: RemoteFile, out: Path, part: Path, log: Callable[[str], None]) -> Path:
    """The partial file does not fit what the server has (the file changed, or a server that gets ranges wrong)."""
    log(f"the partial download {part} does not match the file on the server; starting over")
    part.unlink()
    return fetch_file(remote, out, log)


def unpack(archive: Path, remote: RemoteFile, dest: Path, log: Callable[[str], None] = print) -> None:
    """Extract zip `archive` into `dest` (a single top folder in the zip becomes `dest` itself),
    through a temporary sibling, after checking the members' published checksums."""
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    remove_dead_siblings(dest)  # what an unpack or a folder swap that died left (a whole dataset of disk)
    log(f"unpacking {archive} -> {dest}")
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)  # zipfile drops absolute paths and '..' from member names
        entries = list(tmp.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        for member, checksum in remote.members.items():
            path = root / member
            if not path.is_file():
                raise DownloadError(f"{archive}: has no {member}")
            _check(path, checksum, f"{archive} member {member}")
        publish_dir(root, dest)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive}: not a readable zip ({exc}); delete it and run the command again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify(path: Path, remote: RemoteFile, what: str) -> None:
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise DownloadError(f"{what}: {size:,} bytes, expected {remote.size:,}")
    if remote.checksum:
        _check(path, remote.checksum, what)


def _check(path: Path, checksum: str, what: str) -> None:
    algorithm, _, want = checksum.partition(":")
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    if h.hexdigest() != want.lower():
        raise DownloadError(f"{what}: {algorithm.upper()} mismatch: expected {want}, got {h.hexdigest()}")


def _by_hand(remotes: list[RemoteFile], out: Path) -> str:
    if len(remotes) == 1:
        (remote,) = remotes
        return f"; offline? download {remote.url} by hand, place it at {out / remote.name} and run the command again"
    places = ", ".join(f"{r.url} to {out / r.name}" for r in remotes)
    return f"; offline? download these {len(remotes)} files by hand: {places}; then run the command again"
