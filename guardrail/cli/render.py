"""Terminal output of verdicts (rich: colour on a terminal, plain text elsewhere and under NO_COLOR)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from guardrail.verdict import Attempt, Verdict

__all__ = ["console", "print_verdict"]

console = Console(highlight=False, soft_wrap=True)


def _plain() -> bool:
    return console.color_system is None


def highlighted(attempt: Attempt) -> Text:
    """The answer with its scored span marked (bold underline, or ⟦…⟧ without colour)."""
    span, answer = attempt.span, attempt.answer
    if span.stop == span.start:
        return Text(answer)
    middle = Text(f"⟦{span.text}⟧") if _plain() else Text(span.text, style="bold underline")
    return Text.assemble(answer[: span.char_start], middle, answer[span.char_end :])


def verdict_line(verdict: Verdict) -> Text:
    """``score +0.12 vs threshold -0.05 -> FLAG``."""
    label = verdict.action.value.upper()
    return Text.assemble(
        f"score {verdict.score:+.2f} vs threshold {verdict.threshold:+.2f} -> ",
        (label, "green" if label == "ALLOW" else "red"),
    )


def token_table(attempt: Attempt) -> Table:
    """Per-token energies of one answer; the scored span is starred."""
    table = Table(box=None, pad_edge=False, caption="* = scored span", caption_justify="left")
    for name, justify in (
        ("", "left"),
        ("#", "right"),
        ("token", "left"),
        ("ΔE", "right"),
        ("logprob", "right"),
        ("E_logit", "right"),
        ("E_marg", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    s = attempt.scores
    for i, token in enumerate(attempt.tokens):
        mark = "*" if attempt.span.start <= i < attempt.span.stop else ""
        table.add_row(
            mark,
            str(i),
            repr(token),
            f"{s.spilled_energy[i]:.2f}",
            f"{s.logprob[i]:.2f}",
            f"{s.logit_energy[i]:.2f}",
            f"{s.marginal_energy[i]:.2f}",
        )
    return table


def print_verdict(verdict: Verdict, *, tokens: bool) -> None:
    """Answer (span marked), what is returned, the verdict line, and maybe the token table."""
    console.print(Text.assemble("  answer : ", highlighted(verdict.best)))
    if verdict.text != verdict.answer:
        console.print(f"  returns: {verdict.text}", markup=False)
    console.print(Text.assemble("  verdict: ", verdict_line(verdict), f"  [{len(verdict.attempts)} attempt(s)]"))
    for note in verdict.notes:
        console.print(f"  note   : {note}", markup=False)
    if tokens:
        console.print(token_table(verdict.best))
