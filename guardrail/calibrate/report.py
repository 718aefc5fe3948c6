"""An evaluation report: one HTML page (a jinja2 template, autoescaped) and its PNG figures
(matplotlib, Agg).

Figures: ROC curves of the calibrated score and the baselines, the risk–coverage curve of
abstaining on flagged answers, score histograms of correct vs wrong answers, and a per-token heat
view of spilled energy on example answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from guardrail.calibrate.metrics import risk_coverage, roc_curve
from guardrail.calibrate.scoring import BASELINES, Scored
from guardrail.calibration import Calibration

__all__ = ["write_report"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _roc_png(path: Path, scored: Scored, calibration: Calibration, summary: dict[str, Any]) -> None:
    plt = _pyplot()
    labels = scored.labels
    fig, ax = plt.subplots(figsize=(5.5, 5))
    curves = [("calibrated score", scored.calibrated(calibration), summary["calibration"]["auroc"])]
    curves += [
        (b["name"], scored.values(s), b["auroc"])
        for (_, s), b in zip(
            [x for x in BASELINES if x[1].localizer in scored.spans], summary["baselines"], strict=True
        )
    ]
    for name, values, area in curves:
        fpr, tpr = roc_curve(values, labels)
        ax.plot(fpr, tpr, lw=2.2 if name == "calibrated score" else 1.2, label=f"{name} ({area:.2f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(
        xlabel="false-flag rate (correct answers flagged)",
        ylabel="recall (wrong answers flagged)",
        title="ROC, hallucination = positive",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _risk_png(path: Path, scored: Scored, calibration: Calibration, summary: dict[str, Any]) -> None:
    plt = _pyplot()
    labels = scored.labels
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    curves = [("calibrated score", scored.calibrated(calibration))]
    curves += [(name, scored.values(s)) for name, s in BASELINES if s.localizer in scored.spans][:3]
    for name, values in curves:
        rc = risk_coverage(values, labels, calibration.threshold if name == "calibrated score" else float("inf"))
        width = 2.2 if name == "calibrated score" else 1.0
        ax.plot(rc.curve_coverage, rc.curve_risk, lw=width, label=f"{name} (AURC {rc.aurc:.3f})")
    at = summary["risk_coverage"]
    if at["selective_accuracy"] is not None:
        ax.plot([at["coverage"]], [1 - at["selective_accuracy"]], "ko", label="at the threshold")
    ax.axhline(1 - at["accuracy"], color="grey", ls=":", lw=1, label="no abstention")
    ax.set(
        xlabel="coverage (share of answers let through)",
        ylabel="risk (wrong among those let through)",
        title="abstaining on the highest scores",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _histogram_png(path: Path, scored: Scored, calibration: Calibration) -> None:
    plt = _pyplot()
    scores, labels = scored.calibrated(calibration), scored.labels
    finite = np.isfinite(scores)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.histogram_bin_edges(scores[finite], bins=30)
    ax.hist(scores[finite & ~labels], bins=bins, alpha=0.6, label="correct answers", color="tab:green")
    ax.hist(scores[finite & labels], bins=bins, alpha=0.6, label="wrong answers", color="tab:red")
    ax.axvline(calibration.threshold, color="black", ls="--", lw=1, label="threshold")
    ax.set(xlabel="score (higher = more likely hallucinated)", ylabel="answers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _examples(scored: Scored, calibration: Calibration, count: int) -> list[int]:
    """The most and least suspicious correct and wrong answers."""
    scores, labels = scored.calibrated(calibration), scored.labels
    order = np.argsort(scores)
    right, wrong = [i for i in order if not labels[i]], [i for i in order[::-1] if labels[i]]
    half = max(1, count // 2)
    return [int(i) for i in right[:half] + wrong[:half]]


def _tokens_png(path: Path, scored: Scored, calibration: Calibration, count: int = 8, max_tokens: int = 24) -> None:
    plt = _pyplot()
    rows = _examples(scored, calibration, count)
    spans = scored.spans[calibration.localizer]
    layout = [_token_boxes(_token_texts(scored, i)[:max_tokens]) for i in rows]
    width = max(x + w for boxes in layout for x, w, _ in boxes) if layout else 1.0
    fig, ax = plt.subplots(figsize=(min(16, 1.0 + 0.11 * width), 0.5 * len(rows) + 1.0))
    cmap = plt.get_cmap("coolwarm_r")
    for line, (i, boxes) in enumerate(zip(rows, layout, strict=True)):
        energies, span = scored.records[i].scores.spilled_energy, spans[i]
        ax.text(-0.5, -line, "✓" if scored.records[i].correct else "✗", ha="right", va="center", fontsize=11)
        for t, (x, w, text) in enumerate(boxes):
            color = cmap(float(np.clip((energies[t] + 10) / 20, 0, 1)))
            edge = "black" if span.start <= t < span.stop else "white"
            ax.add_patch(plt.Rectangle((x, -line - 0.4), w, 0.8, facecolor=color, edgecolor=edge, lw=1.5))
            ax.text(x + w / 2, -line, text, ha="center", va="center", fontsize=8, family="monospace")
    ax.set(
        xlim=(-1.5, width + 0.5),
        ylim=(-len(rows) + 0.4, 0.6),
        yticks=[],
        xticks=[],
        title="spilled energy ΔE per token (red: negative, blue: positive; boxed: scored span)",
    )
    for side in ax.spines.values():
        side.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _token_boxes(tokens: list[str]) -> list[tuple[float, float, str]]:
    """``(x, width, label)`` of each token in character units."""
    boxes, x = [], 0.0
    for token in tokens:
        label = token.strip() or "␣"
        width = 0.75 * len(label) + 0.6
        boxes.append((x, width, label))
        x += width + 0.15
    return boxes


def _token_texts(scored: Scored, i: int) -> list[str]:
    record = scored.records[i]
    return [record.text[a:b] for a, b in scored.offsets[i]]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("guardrail.calibrate", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cell"] = _cell
    return env


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def write_report(directory: Path, summary: dict[str, Any], scored: Scored, calibration: Calibration) -> Path:
    """Write ``index.html``, ``roc.png``, ``risk.png``, ``histogram.png`` and ``tokens.png`` into
    ``directory`` (created ``0700`` if missing).

    Returns:
        The path of ``index.html``; it links the PNGs by relative name only.
    """
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True)
    _roc_png(directory / "roc.png", scored, calibration, summary)
    _risk_png(directory / "risk.png", scored, calibration, summary)
    _histogram_png(directory / "histogram.png", scored, calibration)
    _tokens_png(directory / "tokens.png", scored, calibration)
    page = (
        _environment()
        .get_template("report.html.j2")
        .render(summary=summary, calibration=summary["calibration"], risk=summary["risk_coverage"])
    )
    index = directory / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
