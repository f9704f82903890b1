"""The checks on /admin train's zip (``beatforge.training_zip``): what the bot refuses and the worker unpacks."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from beatforge.training_zip import ZipRefused, audio_format, check_zip, extract_zip
from tests.support.bot import wav_bytes

LIMIT = 10 * 2**20


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_zip_of_clips_with_captions_passes_and_unpacks_only_them(tmp_path: Path) -> None:
    wav = wav_bytes(800, rate=8000)
    archive = make_zip(
        tmp_path / "ok.zip",
        {
            "clips/a.wav": wav,
            "clips/a.txt": b"dusty lofi drums",
            "b.wav": wav,
            "b.txt": b"warm pads",
            "__MACOSX/._b.wav": b"junk",
        },
    )
    report = check_zip(archive, max_unpacked_bytes=LIMIT)
    assert report.ok, report.problems
    assert sorted(report.audio) == ["b.wav", "clips/a.wav"] and len(report.captions) == 2
    extract_zip(archive, tmp_path / "out", max_unpacked_bytes=LIMIT)
    found = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert found == ["b.txt", "b.wav", "clips/a.txt", "clips/a.wav"]
    assert (tmp_path / "out" / "b.wav").read_bytes() == wav


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil.txt", "C:/evil.txt", "a\\..\\e.txt"])
def test_a_path_outside_the_folder_is_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", {"a.wav": wav_bytes(800, rate=8000), "a.txt": b"x", name: b"pwned"})
    report = check_zip(archive, max_unpacked_bytes=LIMIT)
    assert any("outside the zip's folder" in p for p in report.problems), report.problems
    out = tmp_path / "deep" / "out"
    with pytest.raises(ZipRefused):
        extract_zip(archive, out, max_unpacked_bytes=LIMIT)
    assert not out.exists() and not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.wav", wav_bytes(800, rate=8000))
        zf.writestr("a.txt", "x")
        link = zipfile.ZipInfo("b.txt")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert "b.txt: links are not allowed" in check_zip(archive, max_unpacked_bytes=LIMIT).problems


def test_non_audio_content_with_an_audio_name_is_refused(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "fake.zip",
        {"a.wav": b"MZ\x90\x00 this is an exe", "a.txt": b"x", "b.mp3": b"fLaC\x00\x00\x00\x22", "b.txt": b"y"},
    )
    problems = check_zip(archive, max_unpacked_bytes=LIMIT).problems
    assert "a.wav: named WAV, but its content is not audio" in problems
    assert "b.mp3: named MP3, but its content is FLAC" in problems
    assert any("holds no clips" in p for p in problems)


def test_missing_captions_and_other_files_are_each_listed(tmp_path: Path) -> None:
    wav = wav_bytes(800, rate=8000)
    archive = make_zip(tmp_path / "c.zip", {"a.wav": wav, "b.wav": wav, "b.txt": b"ok", "notes.pdf": b"%PDF"})
    problems = check_zip(archive, max_unpacked_bytes=LIMIT).problems
    assert "a.wav: no caption (a.txt beside it)" in problems
    assert any(p.startswith("notes.pdf: not a clip") for p in problems)
    assert not any(p.startswith("b.wav") for p in problems)


def test_a_metadata_file_stands_for_the_captions(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "m.zip", {"a.wav": wav_bytes(800, rate=8000), "metadata.jsonl": b'{"file": "a.wav", "caption": "x"}'}
    )
    assert check_zip(archive, max_unpacked_bytes=LIMIT).ok


def test_oversize_is_refused_as_declared_and_as_written(tmp_path: Path) -> None:
    wav = wav_bytes(80_000, rate=8000)  # ~160 kB, compresses to little
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.wav", wav)
        zf.writestr("a.txt", "x")
    problems = check_zip(archive, max_unpacked_bytes=100_000).problems
    assert any("unpacks to 0.2 MiB; the limit is" in p for p in problems), problems
    with pytest.raises(ZipRefused):
        extract_zip(archive, tmp_path / "out", max_unpacked_bytes=100_000)


def test_a_file_that_is_not_a_zip_is_refused_by_its_content(tmp_path: Path) -> None:
    path = tmp_path / "clips.zip"
    path.write_bytes(b"Rar!\x1a\x07\x00 not a zip")
    assert check_zip(path, max_unpacked_bytes=LIMIT).problems == [
        "this is not a zip file (its content does not start like one)"
    ]
    truncated = io.BytesIO()
    with zipfile.ZipFile(truncated, "w") as zf:
        zf.writestr("a.wav", wav_bytes(800, rate=8000))
    path.write_bytes(truncated.getvalue()[:40])
    assert any("can't be read" in p for p in check_zip(path, max_unpacked_bytes=LIMIT).problems)


@pytest.mark.parametrize(
    ("head", "found"),
    [
        (b"RIFF\x00\x00\x00\x00WAVE", "wav"),
        (b"fLaC", "flac"),
        (b"OggS\x00", "ogg"),
        (b"ID3\x04", "mp3"),
        (b"\xff\xfb\x90\x00", "mp3"),
        (b"RIFF\x00\x00\x00\x00AVI ", None),
        (b"PK\x03\x04", None),
        (b"", None),
    ],
)
def test_audio_is_told_by_its_first_bytes(head: bytes, found: str | None) -> None:
    assert audio_format(head) == found
