"""The terminal the CLI talks to: human lines by default, JSON with ``--json``, a progress bar, quiet libraries."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatforge.config import Settings, get_settings
from cli import generate
from cli.console import ProgressBar, clock
from cli.main import main


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("BEATFORGE_DISCORD_TOKEN", "BEATFORGE_DATABASE_URL", "BEATFORGE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, and ./data lands in tmp
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


GENERATE = ["generate", "dark trap", "--model", "debug", "--duration", "2", "--seed", "1234", "--no-metadata"]


def _json_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{")]


def test_default_output_is_one_human_line_per_file_and_no_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GENERATE, "--takes", "2", "--out", "beat.wav"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "wrote beat.wav (2.0 s, 32 kHz, seed 1234)"
    assert re.fullmatch(r"wrote beat-take2\.wav \(2\.0 s, 32 kHz, seed \d+\)", out.splitlines()[1])
    assert len(out.splitlines()) == 2
    # the engine logs "model loaded" at INFO, and the model's config warns through transformers: neither shows
    assert not _json_lines(out) and not _json_lines(err)
    assert "model loaded" not in err and "[transformers]" not in err and "Warning" not in err


def test_json_flag_prints_the_result_object_and_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", *GENERATE, "--verbose", "--out", "beat.wav"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["out"], summary["seed"], summary["sample_rate"], summary["duration_s"]) == (
        "beat.wav",
        1234,
        32_000,
        2.0,
    )
    logs = [json.loads(line) for line in _json_lines(err)]
    assert any(entry["msg"] == "model loaded" and entry["level"] == "INFO" for entry in logs)
    assert "generating [" not in err  # no bar among the JSON lines unless asked for


def test_json_flag_works_after_the_command_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GENERATE, "--json", "--out", "beat.wav"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 1234


def test_progress_bar_reaches_100_percent_with_steps_audio_and_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GENERATE, "--progress", "always", "--out", "beat.wav"]) == 0
    out, err = capsys.readouterr()
    bars = [line for line in err.splitlines() if line.startswith("generating [")]
    assert len(bars) >= 2, err  # it moved: some lines before the end, not only a final one
    percents = [int(re.search(r"(\d+)%", line).group(1)) for line in bars]  # type: ignore[union-attr]
    assert percents == sorted(percents) and percents[-1] == 100 and percents[0] < 100
    done, total = map(int, re.search(r"(\d+)/(\d+) steps", bars[-1]).groups())  # type: ignore[union-attr]
    assert done == total > 0
    assert "2.0/2.0 s audio" in bars[-1] and "took" in bars[-1] and "left" in bars[len(bars) // 2]
    assert "generating" not in out  # the bar never mixes with the results


def test_progress_bar_stays_off_where_nobody_watches(capsys: pytest.CaptureFixture[str]) -> None:
    """Under pytest stderr is no terminal: ``auto`` draws nothing, ``never`` draws nothing even when forced."""
    assert main([*GENERATE, "--out", "beat.wav"]) == 0
    assert "generating" not in capsys.readouterr().err
    assert main([*GENERATE, "--progress", "never", "--out", "beat.wav"]) == 0
    assert "generating" not in capsys.readouterr().err


def test_verbose_lets_info_through_in_human_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GENERATE, "--verbose", "--out", "beat.wav"]) == 0
    out, err = capsys.readouterr()
    assert "beatforge: info: model loaded (generation.music.musicgen) model=debug" in err
    assert not _json_lines(err) and out.startswith("wrote beat.wav")


def _noisy_run(args: argparse.Namespace, settings: Settings) -> int:
    """Stands in for a command's work: the kinds of noise a real run meets, each once (transformers warns
    each message once per process, so the real ones cannot be provoked twice in one test session)."""
    logging.getLogger("transformers.configuration_utils").warning("Model config: pad_token_id must be None")
    logging.getLogger("numba.core").warning("numba chatter")
    logging.getLogger("generation.music.engine").info("model loaded")
    logging.getLogger("cli.generate").warning("the prompt was shortened")
    warnings.warn("librosa: n_fft is too large", UserWarning, stacklevel=1)
    logging.getLogger("somelib").error("a library's real error")
    return 0


def test_library_warnings_and_info_are_kept_out_unless_verbose(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "run_generate", _noisy_run)
    before = logging.getLogger("transformers").level  # transformers sets its own once imported
    assert main(["generate", "x"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "beatforge: warning: the prompt was shortened",
        "beatforge: error: a library's real error",
    ]
    # our own handler sees transformers' records only if it propagates; its own logger level must keep it quiet
    assert logging.getLogger("transformers").level == before  # restored after the command

    assert main(["generate", "x", "--verbose"]) == 0
    err = capsys.readouterr().err
    for text in ("pad_token_id", "numba chatter", "model loaded", "shortened", "n_fft is too large"):
        assert text in err, (text, err)


def test_transformers_is_quiet_while_a_command_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers logs through its own handler, so the root filter cannot stop it: its logger level must."""
    levels: list[int] = []

    def run(args: argparse.Namespace, settings: Settings) -> int:
        levels.append(logging.getLogger("transformers").getEffectiveLevel())
        return 0

    monkeypatch.setattr(generate, "run_generate", run)
    assert main(["generate", "x"]) == 0
    assert main(["generate", "x", "-v"]) == 0
    assert levels[0] >= logging.ERROR and levels[1] <= logging.INFO


def test_errors_stay_one_sentence_in_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--verbose"], ["--json"]):
        assert main(["generate", "x", "--model", "/nowhere", "--out", "b.wav", *extra]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "Traceback" not in err
        assert err.startswith("beatforge: model directory /nowhere does not exist") and err.count("\n") == 1, err


def test_status_json_works_before_or_after_the_command() -> None:
    """``status`` had its own ``--json`` first: both spellings must still parse (and mean JSON)."""
    from cli.console import output_of
    from cli.main import build_parser

    parser = build_parser(get_settings())
    for argv in (["status", "--json"], ["--json", "status"]):
        assert output_of(parser.parse_args(argv)).json, argv
    assert not output_of(parser.parse_args(["status"])).json


def test_bar_on_a_terminal_redraws_one_line_and_ends_it() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar("transcribing", stream=stream)
    for done in range(1, 51):
        bar(done, 50)
    bar(50, 50)  # a repeated final call draws nothing more
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and "\r" in text
    assert "100% 50/50 steps" in text.split("\r")[-1] and "audio" not in text


def test_clock_reads_like_a_person_would_say_it() -> None:
    assert [clock(s) for s in (0, 42.4, 187, 3723)] == ["0 s", "42 s", "3:07", "1:02:03"]
