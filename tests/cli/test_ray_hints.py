"""Without the ``[ray]`` extra, every Ray path stops with the install hint, before a model loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

HINT = "pip install 'spillguard[ray]'"


def _without_ray(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['ray'] = None\n" + code],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--data", "capitals", "--engine", "ray"],
        ["calibrate", "--data", "capitals", "--out", "x", "--engine", "ray"],
    ],
)
def test_engine_ray_is_refused_with_the_hint(argv: list[str]) -> None:
    done = _without_ray(f"from guardrail.cli import main; raise SystemExit(main({argv!r}))")
    assert done.returncode == 2 and HINT in done.stderr and "Traceback" not in done.stderr


def test_serve_is_refused_with_the_hint() -> None:
    done = _without_ray("from guardrail.cli import main; raise SystemExit(main(['serve']))")
    assert done.returncode == 2 and HINT in done.stderr and "Traceback" not in done.stderr


def test_the_python_entry_points_raise_spillguard_errors_with_the_hint() -> None:
    code = (
        "from guardrail.errors import SpillguardError\n"
        "from guardrail.calibrate.ray_engine import require_ray\n"
        "from guardrail.serve.deployment import application\n"
        "for call in (require_ray, lambda: application(dict)):\n"
        "    try:\n"
        "        call()\n"
        "    except SpillguardError as exc:\n"
        "        print(exc)\n"
    )
    done = _without_ray(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(HINT) == 2


def test_serve_refuses_bad_options_before_any_cluster_starts(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    from guardrail.cli import main

    assert main(["serve", "--model", "/no/such/model"]) == 2
    assert "`--model` '/no/such/model' does not exist" in capsys.readouterr().err
    assert main(["serve", "--num-replicas", "2", "--autoscaling-config", '{"min_replicas": 1}']) == 2
    assert "Ray Serve refused the deployment options" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--num-replicas", "0"])
    assert "must be a count >= 1 or 'auto'" in capsys.readouterr().err
