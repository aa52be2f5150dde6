"""Atomic writes (dlf._io): nothing half-written, nothing left behind."""
import os

import pytest

from dlf._io import atomic_write_bytes


def test_an_interrupt_just_after_the_temporary_file_is_created_leaves_nothing(tmp_path, monkeypatch):
    """A Ctrl-C landing after the temporary file was created but before its name was known to the writer (inside
    tempfile.mkstemp) left a hidden .tmp file beside a checkpoint: seen once in 45 stops of a 2-process run."""
    real_open = os.open

    def open_then_interrupt(*args, **kwargs):
        os.close(real_open(*args, **kwargs))
        raise KeyboardInterrupt

    (tmp_path / "f").write_bytes(b"old")
    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "f", b"new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["f"] and (tmp_path / "f").read_bytes() == b"old"


def test_the_written_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644 and (tmp_path / "f").read_bytes() == b"x"
