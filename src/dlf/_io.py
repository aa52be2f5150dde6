"""Atomic file writes: write a temporary sibling, then rename over the target."""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a hidden temporary file beside `path`, then rename it over `path`: a reader sees the old file
    or the new one whole. The temporary name is chosen before the file exists, so an interrupt at any moment from
    its creation on removes it (with tempfile.mkstemp, a Ctrl-C landing inside it, after the file was created but
    before its name was returned, left the file behind)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 less the umask, as for any new file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_safe(obj):
    """`obj` with NaN/inf floats as None: json.dumps writes them as NaN, which is not JSON (jq, JSON.parse and
    strict parsers refuse it); an undefined metric (the AUC of a one-class split) is null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Strict JSON (non-finite floats as null), written atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def publish_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Swap a finished folder `tmp` into place at `out`; a previous `out` stays whole until the swap."""
    import shutil

    tmp, out = Path(tmp), Path(out)
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_dead_siblings(out: str | os.PathLike) -> None:
    """Remove the folders that runs which died left beside `out`: .OUT.tmp-PID-* (a build) and .OUT.old-PID-*
    (the output being replaced, left when a run died while swapping folders in publish_dir: a whole dataset's
    worth of disk that nothing else removes). A .OUT.old-PID-* with no `out` beside it is the previous output,
    whole (the run died between publish_dir's two renames): it is put back at `out`, not removed. A folder of a
    process still alive is left alone."""
    import glob
    import shutil

    out = Path(out)
    name = glob.escape(out.name)
    for p in [*out.parent.glob(f".{name}.tmp-*"), *out.parent.glob(f".{name}.old-*")]:
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass
        if alive and pid != os.getpid():
            continue
        if p.name.startswith(f".{out.name}.old-") and not os.path.lexists(out):
            try:
                p.rename(out)
                continue
            except OSError:  # another run put back or wrote `out` meanwhile: this one goes
                pass
        shutil.rmtree(p, ignore_errors=True)


def atomic_write_png(fig, path: str | os.PathLike) -> None:
    """Render a matplotlib figure (a matplotlib.figure.Figure, which pyplot does not hold) to PNG and write it
    atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(path, buf.getvalue())
