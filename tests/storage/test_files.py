"""Atomic writes: the final name holds the old file or the whole new one, and a failure leaves no litter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from storage.files import TMP_PREFIX, atomic_directory, atomic_path, atomic_write_bytes, atomic_write_text


def test_a_write_lands_under_the_final_name_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "folder" / "beat.wav"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(TMP_PREFIX) and tmp.name.endswith("beat.wav")
        assert tmp.exists() and tmp.stat().st_size == 0
        tmp.write_bytes(b"RIFF")
        assert not target.exists()
    assert target.read_bytes() == b"RIFF"
    assert os.listdir(target.parent) == ["beat.wav"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path: Path) -> None:
    target = atomic_write_bytes(tmp_path / "beat.wav", b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["beat.wav"]


def test_a_rewrite_replaces_the_whole_file(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "meta.json", '{"bpm": 120, "key": "A minor"}\n')
    atomic_write_text(target, "{}\n")
    assert target.read_text(encoding="utf-8") == "{}\n"


def test_two_writers_of_one_target_never_share_a_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "loop.flac"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    assert target.read_bytes() == b"first"  # the outer write finished last
    assert os.listdir(tmp_path) == ["loop.flac"]


def test_files_get_the_usual_permissions_not_private_ones(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        target = atomic_write_bytes(tmp_path / "cover.png", b"\x89PNG")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_text_is_written_in_the_encoding_asked_for(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "registry.json", '{"name": "café"}\n')
    assert target.read_bytes() == '{"name": "café"}\n'.encode()


def test_a_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with atomic_directory(out) as partial:
        assert partial.is_dir() and partial.name.startswith(TMP_PREFIX)
        (partial / "config.json").write_text("{}", encoding="utf-8")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["config.json"]
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_a_directory_may_replace_an_empty_one(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    with atomic_directory(out) as partial:
        (partial / "weights.safetensors").write_bytes(b"w")
    assert [p.name for p in out.iterdir()] == ["weights.safetensors"]


def test_a_failed_directory_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt), atomic_directory(out) as partial:
        (partial / "half.bin").write_bytes(b"h")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
