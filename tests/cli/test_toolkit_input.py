"""Bad toolkit arguments are refused before any model loads or anything is generated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guardrail.cli import main, toolkit


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a guard (loading the model) fails the test: every check must come first."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(toolkit, "build_guard", refuse)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "1.5"], "`--split` must be a fraction in (0, 1]"),
        (["--split", "nan"], "`--split` must be a fraction in (0, 1]"),
        (["--split", "0"], "`--split` must be a fraction in (0, 1]"),
        (["--batch-size", "0"], "`--batch-size` must be an int >= 1"),
        (["--max-new-tokens", "0"], "`--max-new-tokens` must be an int >= 1"),
        (["--limit", "0"], "`--limit` must be an int >= 1"),
        (["--seed", "-1"], "`--seed` must be an int >= 0"),  # bug: a numpy ValueError traceback
        (["--goal", "bogus"], "`goal` must be 'f1' or 'false-flag-rate=X'"),
        (["--goal", "false-flag-rate=2"], "`goal` must be"),
        (["--data", "capitals\udcff"], "`--data` is not valid text"),
        (["--data", "capitals@0"], "size after '@'"),
        (["--data", "rag:nowhere"], "`source` must be one of"),
        (["--template", "bad"], "`template` must name a prompt shape"),
    ],
)
def test_calibrate_refuses_before_generating(
    no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "Capital of Peru?", "answers": ["Lima"], "context": "Lima is in Peru."}\n')
    argv = ["calibrate", "--data", str(data), "--out", str(tmp_path / "c.json"), "--quiet", *extra]
    assert message in _error(capsys, argv)


def test_unwritable_outputs_are_found_first(no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-folder" / "c.json"
    err = _error(capsys, ["calibrate", "--data", "capitals", "--out", str(missing)])
    assert "`--out`" in err and "does not exist or is not writable" in err
    err = _error(capsys, ["calibrate", "--data", "capitals", "--out", str(tmp_path)])
    assert "is not a writable file" in err
    a_file = tmp_path / "report"
    a_file.write_text("x")
    err = _error(capsys, ["evaluate", "--data", "capitals", "--report", str(a_file)])
    assert "`--report`" in err and "is not a writable folder" in err
    err = _error(capsys, ["evaluate", "--data", "capitals", "--report", str(tmp_path / "a" / "b")])
    assert "does not exist or is not writable" in err


def test_evaluate_retry_attempts_are_checked_first(no_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, ["evaluate", "--data", "capitals", "--policy", "retry", "--max-attempts", "9"])
    assert "max_attempts" in err


def test_loto_needs_several_tasks(no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, ["calibrate", "--data", "capitals", "--select", "loto", "--out", str(tmp_path / "c.json")])
    assert "`--select loto` needs several tasks" in err


def test_data_fetch_archive_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.setenv("SPILLGUARD_CACHE", str(tmp_path / "cache"))
    err = _error(capsys, ["data", "fetch", "bigbench", "--archive", str(tmp_path / "missing.tar.gz")])
    assert "is not a file" in err
    fake = tmp_path / "bigbench-1.0.0.tar.gz"
    fake.write_bytes(b"not the sdist")
    assert "not the pinned" in _error(capsys, ["data", "fetch", "bigbench", "--archive", str(fake)])
    assert "`name` must be bigbench" in _error(capsys, ["data", "fetch", "squad"])


@pytest.mark.parametrize(
    "argv", [["evaluate", "--data", "capitals"], ["calibrate", "--data", "capitals", "--out", "x.json"]]
)
def test_the_batch_defaults_are_the_runs_ones(argv: list[str]) -> None:
    """The CLI cannot import the toolkit before a command runs, so its defaults are literals: kept equal here."""
    from guardrail.calibrate.runs import BATCH_SIZE, MAX_NEW_TOKENS
    from guardrail.cli.app import parser

    args = parser().parse_args(argv)
    assert (args.batch_size, args.max_new_tokens) == (BATCH_SIZE, MAX_NEW_TOKENS)


def test_a_file_system_error_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """Bug: a name too long for the file system escaped as a raw OSError from ``Path.is_file``."""
    assert "File name too long" in _error(capsys, ["evaluate", "--data", "a" * 300 + ".jsonl"])
