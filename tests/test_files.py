import os

import pytest

from pisa_jax.files import atomic_write


def test_text_and_bytes_replace_the_file_and_leave_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old\n")
    assert atomic_write(path, "néw\n") == path
    assert path.read_text(encoding="utf-8") == "néw\n"
    atomic_write(path, b"\x89PNG")
    assert path.read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text("old\n")

    def no_space(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
