"""The command line without its extras, and its error policy (no model is loaded here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from guardrail.cli import main


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_without_the_cli_extra_main_prints_the_install_hint() -> None:
    done = _run(
        "import sys; sys.modules['rich'] = None; from guardrail.cli import main; raise SystemExit(main(['demo']))"
    )
    assert done.returncode == 1
    assert "pip install 'spillguard[cli]'" in done.stderr and "Traceback" not in done.stderr


def test_without_the_toolkit_extra_a_toolkit_command_prints_the_install_hint() -> None:
    code = (
        "import sys; sys.modules['sklearn'] = None; from guardrail.cli import main; "
        "raise SystemExit(main(['data', 'list']))"
    )
    done = _run(code)
    assert done.returncode == 2
    assert "pip install 'spillguard[calibrate]'" in done.stderr and "Traceback" not in done.stderr


def test_bad_question_is_refused_before_the_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "   "]) == 2
    assert "`question` must contain a non-space character" in capsys.readouterr().err
    assert main(["check", "--prompt", "q", "--answer", " "]) == 2
    assert "`answer` must contain a non-space character" in capsys.readouterr().err


def test_score_is_the_old_name_of_check(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "teacher-forced" in capsys.readouterr().out
