"""``spillguard calibrate`` / ``evaluate`` / ``data`` end to end on the bundled model (small samples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardrail.calibration import Calibration
from guardrail.cli import main

pytestmark = pytest.mark.integration


def test_calibrate_then_evaluate_cross_task(
    bundled: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cal.json"
    assert (
        main(
            [
                "calibrate",
                "--data",
                "capitals",
                "--limit",
                "40",
                "--seed",
                "1",
                "--out",
                str(out),
                "--no-cache",
                "--quiet",
                "--goal",
                "false-flag-rate=0.2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "chosen:" in printed and f"wrote {out}" in printed
    calibration = Calibration.load(out)
    assert calibration.model is not None and calibration.model.name == "SmolLM2-135M-Instruct-Q4_1"
    assert calibration.report is not None and calibration.report.n == 40
    assert calibration.report.false_flag_rate is not None and calibration.report.false_flag_rate <= 0.2
    assert calibration.goal == "false-flag-rate=0.2"

    data = tmp_path / "mine.jsonl"
    rows = [
        ("Who wrote the play Romeo and Juliet?", ["Shakespeare"]),
        ("What is the capital of Japan?", ["Tokyo"]),
        ("What is the capital of Mali?", ["Bamako"]),
        ("What is the capital of Kyrgyzstan?", ["Bishkek"]),
        ("What is the chemical symbol for gold?", ["Au"]),
        ("What is the capital of Honduras?", ["Tegucigalpa"]),
        ("What is the capital of Egypt?", ["Cairo"]),
        ("What is the capital of Paraguay?", ["Asunción"]),
    ]
    data.write_text("".join(json.dumps({"question": q, "answers": a}) + "\n" for q, a in rows))
    report = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(data),
                "--calibration",
                str(out),
                "--json",
                "--no-cache",
                "--quiet",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    summary, items = result["summary"], result["items"]
    assert summary["n"] == len(items) == 8 and 0 < summary["accuracy"] < 1
    assert summary["calibration"]["given"] is True and 0 <= summary["calibration"]["auroc"] <= 1
    assert {"precision", "recall", "f1", "flag_rate"} <= set(summary["calibration"])
    assert {b["name"] for b in summary["baselines"]} >= {"mean token log-prob", "min token log-prob"}
    assert len(summary["scorers"]) == 6 * 5 * 2  # metrics × poolings × localizers
    assert set(items[0]) == {"question", "answer", "correct", "score", "flagged", "span"}
    assert all(item["flagged"] == (item["score"] > calibration.threshold) for item in items)
    page = (report / "index.html").read_text()
    assert "ROC" in page and "risk–coverage" in page
    assert all((report / f).stat().st_size > 1000 for f in ("roc.png", "risk.png", "histogram.png", "tokens.png"))


def test_evaluate_text_with_shipped_default(
    bundled: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--data", "capitals", "--limit", "16", "--seed", "2", "--no-cache", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "baselines (AUROC, 95% bootstrap interval):" in printed and "nan" not in printed.lower()


def test_evaluate_teacher_forced_arithmetic(bundled: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "evaluate",
                "--data",
                "arithmetic-forced:1",
                "--limit",
                "24",
                "--seed",
                "3",
                "--json",
                "--no-cache",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    summary, items = result["summary"], result["items"]
    assert summary["n"] == 24 and summary["generated"] == 0 and summary["questions_per_second"] is None
    for item in items:  # the given answers, scored as they are, graded on the true sum
        x, y = (int(n) for n in item["question"].split(": ")[1].split("=")[0].split("+"))
        assert item["correct"] == (int(item["answer"]) == x + y) and item["span"]["text"] in item["answer"]
    assert 0 < summary["accuracy"] < 1 and 0 <= summary["calibration"]["auroc"] <= 1


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (['{"question": "Q?"}'], "needs keys `question` and `answers`"),
        (['{"question": "Q?", "answers": [1]}'], "non-empty list of non-empty str"),
        ([""], "has no rows"),
    ],
)
def test_bad_data_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[str], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n")
    assert main(["calibrate", "--data", str(path), "--out", str(tmp_path / "c.json"), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_bad_calibration_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cal.json"
    path.write_text('{"schema_version": 7}')
    assert main(["evaluate", "--data", "capitals", "--calibration", str(path)]) == 2
    assert "schema_version 7" in capsys.readouterr().err


def test_all_correct_dataset_says_auroc_is_undefined(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bundled: object
) -> None:
    import guardrail.calibrate.runs as runs

    monkeypatch.setattr(runs, "grade", lambda answer, references: True)
    path = tmp_path / "easy.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"What is {i} plus one?", "answers": [str(i + 1)]}) + "\n" for i in range(3))
    )
    assert main(["evaluate", "--data", str(path), "--no-cache", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "AUROC is undefined: all 3 answers are correct" in err and "nan" not in err.lower()


def test_data_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "capitals" in listing and "qa-wikidata" in listing
    assert main(["data", "fetch", "nope"]) == 2
    assert "`name` must be bigbench" in capsys.readouterr().err


def test_shipped_default_calibration(real_guard: object) -> None:
    from pathlib import Path as _Path

    import guardrail

    shipped = Calibration.load(_Path(guardrail.__file__).parent / "data" / "default_calibration.json")
    assert real_guard.calibration == shipped  # type: ignore[attr-defined]
    assert shipped.model == real_guard.fingerprint  # type: ignore[attr-defined]
    assert shipped.goal == "false-flag-rate=0.15" and shipped.localizer == "heuristic"
    report = shipped.report
    assert report is not None and report.n >= 1200 and "qa-wikidata" in report.data and "quiz:elements" in report.data
    # chosen leave-one-task-out over the factual dev tasks; its held-out numbers: docs/benchmarks.md
    assert "leave-one-task-out" in (report.selection or "") and "9 dev tasks" in (report.selection or "")
    assert report.false_flag_rate is not None and report.false_flag_rate <= 0.15 and report.recall >= 0.45


def test_calibrate_leave_one_task_out_then_evaluate_retry(
    bundled: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "loto.json"
    argv = ["calibrate", "--data", "capitals@24+countries:continent@24", "--out", str(out), "--no-cache", "--quiet"]
    assert main([*argv, "--seed", "3", "--no-research", "--metrics", "logprob,entropy,spilled_energy"]) == 0
    printed = capsys.readouterr().out
    assert "leave-one-task-out over 2 dev tasks" in printed and "chosen (best shippable)" in printed
    assert "expected recall" in printed and "ablation" in printed
    calibration = Calibration.load(out)
    assert calibration.goal == "false-flag-rate=0.15" and calibration.report is not None
    assert "leave-one-task-out" in (calibration.report.selection or "")
    assert calibration.report.false_flag_rate is not None and calibration.report.false_flag_rate <= 0.15

    argv = ["evaluate", "--data", "capitals@8", "--seed", "5", "--calibration", str(out), "--json", "--no-cache"]
    assert main([*argv, "--quiet", "--policy", "retry", "--max-attempts", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    risk, retry = summary["risk_coverage"], summary["retry"]
    assert 0 <= risk["coverage"] <= 1 and risk["aurc_optimal"] <= risk["aurc"] + 1e-9
    assert retry["n"] == summary["n"] and 1 <= retry["mean_attempts"] <= 2 and retry["max_attempts"] == 2
    assert 0 <= retry["final_accuracy"] <= 1 and summary["calibration"]["expected"]["recall"] > 0
    assert summary["best_baseline"]["name"] in {b["name"] for b in summary["baselines"]}


def test_quiet_silences_the_model_loading_bar(bundled: object) -> None:
    """``--quiet`` once left transformers' "Loading weights" bar on stderr; only warnings remain."""
    command = [sys.executable, "-m", "guardrail.cli", "evaluate", "--data", "given:capitals", "--limit", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    quiet = subprocess.run([*command, "--quiet", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and json.loads(quiet.stdout)["summary"]["n"] == 4
