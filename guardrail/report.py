"""An evaluation report: one self-contained HTML page and its PNG figures (matplotlib, Agg).

Figures: ROC curves of the calibrated score and the baselines, score histograms of correct vs
wrong answers, and a per-token heat view of spilled energy on example answers.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from guardrail.calibration import Calibration
from guardrail.evaluation import BASELINES, Scored

__all__ = ["roc_curve", "write_report"]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-flag rate and recall over all thresholds (hallucinated = positive), from (0, 0) to (1, 1)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y = np.asarray(scores)[order], np.asarray(labels, dtype=bool)[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(1, (~y).sum())], np.r_[0.0, tp / max(1, y.sum())]


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
    curves += [(b["name"], scored.values(s), b["auroc"])
               for (name, s), b in zip([x for x in BASELINES if x[1].localizer in scored.spans], summary["baselines"])]
    for name, values, area in curves:
        fpr, tpr = roc_curve(values, labels)
        ax.plot(fpr, tpr, lw=2.2 if name == "calibrated score" else 1.2, label=f"{name} ({area:.2f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false-flag rate (correct answers flagged)", ylabel="recall (wrong answers flagged)",
           title="ROC, hallucination = positive")
    ax.legend(fontsize=7, loc="lower right")
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
    for line, (i, boxes) in enumerate(zip(rows, layout)):
        energies, span = scored.records[i].scores.spilled_energy, spans[i]
        ax.text(-0.5, -line, "✓" if scored.records[i].correct else "✗", ha="right", va="center", fontsize=11)
        for t, (x, w, text) in enumerate(boxes):
            color = cmap(float(np.clip((energies[t] + 10) / 20, 0, 1)))
            edge = "black" if span.start <= t < span.stop else "white"
            ax.add_patch(plt.Rectangle((x, -line - 0.4), w, 0.8, facecolor=color, edgecolor=edge, lw=1.5))
            ax.text(x + w / 2, -line, text, ha="center", va="center", fontsize=8, family="monospace")
    ax.set(xlim=(-1.5, width + 0.5), ylim=(-len(rows) + 0.4, 0.6), yticks=[], xticks=[],
           title="spilled energy ΔE per token (red: negative, blue: positive; boxed: scored span)")
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


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f5f5f5;padding:1px 4px}"""


def write_report(directory: Path, summary: dict[str, Any], scored: Scored, calibration: Calibration) -> Path:
    """Write ``index.html``, ``roc.png``, ``histogram.png`` and ``tokens.png`` into ``directory``.

    Returns:
        The path of ``index.html``; it links the PNGs by relative name only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _roc_png(directory / "roc.png", scored, calibration, summary)
    _histogram_png(directory / "histogram.png", scored, calibration)
    _tokens_png(directory / "tokens.png", scored, calibration)
    cal = summary["calibration"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>spillguard evaluation</title>
<style>{_STYLE}</style></head><body>
<h1>spillguard evaluation: {html.escape(summary["dataset"])}</h1>
<p>{summary["n"]} answers, {summary["accuracy"]:.0%} correct. Data: {html.escape(str(summary.get("data", "")))}.</p>
<h2>Calibrated score</h2><p><code>{html.escape(cal["describe"])}</code></p>
{_table([cal], ["auroc", "low", "high", "threshold", "precision", "recall", "f1", "flag_rate", "false_flag_rate"])}
<p>AUROC: probability that a wrong answer scores above a correct one (0.5 = chance); low/high is the
bootstrap 95% interval. Flag rate: fraction of all answers flagged; false-flag rate: fraction of correct
answers flagged.</p>
<img src="roc.png" alt="ROC curves"><img src="histogram.png" alt="score histograms">
<h2>Baselines</h2>{_table(summary["baselines"], ["name", "scorer", "auroc", "low", "high"])}
<h2>Example answers, token by token</h2>
<p>Each row is one answer (✓ correct, ✗ wrong): the two most confidently allowed correct answers first,
then the most suspicious wrong ones. Color is the token's spilled energy ΔE; the boxed tokens are the span the
score pools over.</p><img src="tokens.png" alt="per-token spilled energy">
<h2>Every metric × pooling × localizer</h2>
<p>A-priori direction (see <code>docs/calibration.md</code>); AUROC below 0.5 means the reverse direction separates.</p>
{_table(summary["scorers"], ["scorer", "auroc", "low", "high"])}
</body></html>
"""
    index = directory / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
