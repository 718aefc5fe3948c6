"""Answer localizers: which tokens carry the answer."""

from __future__ import annotations

import pytest

from guardrail.errors import InvalidInputError
from guardrail.localize import (
    ExplicitSpan,
    HeuristicLocalizer,
    LLMExtractionLocalizer,
    WholeAnswer,
    token_offsets,
)


def words(text: str) -> list[tuple[int, int]]:
    """Offsets of a GPT-2-like tokenization: each word token carries its leading space."""
    import re

    return [(m.start(), m.end()) for m in re.finditer(r"\s*\w+|\s*[^\w\s]", text)]


@pytest.mark.parametrize(
    ("question", "answer", "expected"),
    [
        ("What is the capital of France?", "The capital of France is Paris.", "Paris"),
        ("What is the capital of France?", "Paris is the capital of France.", "Paris"),
        (
            "What is the capital of Trinidad and Tobago?",
            "The capital of Trinidad and Tobago is Port of Spain.",
            "Port of Spain",
        ),
        ("What is the capital of Argentina?", "It is Buenos Aires, a large city.", "Buenos Aires"),
        ("Who wrote Hamlet?", "Hamlet was written by William Shakespeare.", "William Shakespeare"),
        ("What is 17 times 23?", "17 times 23 equals 391.", "391"),
        ("What color is the sky?", "The sky is usually blue during the day.", "usually blue"),
        ("What is the capital of France?", "The capital of France is Paris", "Paris"),
    ],
)
def test_heuristic_finds_the_first_content_run(question: str, answer: str, expected: str) -> None:
    span = HeuristicLocalizer().locate(question, answer, words(answer))
    assert span.text == expected
    assert span.source == "heuristic"


def test_heuristic_span_includes_the_leading_space_token_and_excludes_punctuation() -> None:
    answer = "The capital of France is Paris."
    offsets = words(answer)
    span = HeuristicLocalizer().locate("What is the capital of France?", answer, offsets)
    assert [answer[a:b] for a, b in offsets[span.start : span.stop]] == [" Paris"]


def test_heuristic_falls_back_to_the_whole_answer_when_everything_is_copied() -> None:
    answer = "The capital of France."
    span = HeuristicLocalizer().locate("What is the capital of France?", answer, words(answer))
    assert span.start == 0 and span.stop == len(words(answer)) and "no content word" in span.source


def test_explicit_span_by_substring_and_chars() -> None:
    answer = "The capital of France is Paris."
    offsets = words(answer)
    by_text = ExplicitSpan(substring="paris").locate("q", answer, offsets)
    by_chars = ExplicitSpan(chars=(25, 30)).locate("q", answer, offsets)
    assert by_text == by_chars and by_text.text == "Paris" and by_text.source == "explicit"


def test_explicit_span_errors_name_the_argument() -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        ExplicitSpan()
    with pytest.raises(InvalidInputError, match="`substring`"):
        ExplicitSpan(substring=" ")
    with pytest.raises(InvalidInputError, match="`chars`"):
        ExplicitSpan(chars=(5, 2))
    with pytest.raises(InvalidInputError, match="does not occur"):
        ExplicitSpan(substring="Rome").locate("q", "Paris.", words("Paris."))
    with pytest.raises(InvalidInputError, match="run past"):
        ExplicitSpan(chars=(0, 99)).locate("q", "Paris.", words("Paris."))


def test_whole_answer_skips_surrounding_whitespace_tokens() -> None:
    answer = " Paris.\n"
    offsets = [(0, 6), (6, 7), (7, 8)]
    span = WholeAnswer().locate("q", answer, offsets)
    assert (span.start, span.stop, span.text) == (0, 2, "Paris.")
    with pytest.raises(InvalidInputError, match="empty answer"):
        WholeAnswer().locate("q", "", [])


def test_llm_extraction_maps_the_extracted_string_back_to_tokens() -> None:
    answer = "Well, I believe the answer is Port of Spain, on Trinidad."
    seen: list[str] = []

    def complete(prompt: str) -> str:
        seen.append(prompt)
        return " port of spain.\nQ: something else"

    span = LLMExtractionLocalizer(complete).locate("Capital of Trinidad and Tobago?", answer, words(answer))
    assert span.text == "Port of Spain" and span.source == "llm"
    assert "Exact answer:" in seen[0] and answer in seen[0]


@pytest.mark.parametrize("reply", ["NO ANSWER", "Lisbon", "", "   "])
def test_llm_extraction_falls_back_and_says_so(reply: str) -> None:
    answer = "The capital of France is Paris."
    span = LLMExtractionLocalizer(lambda _: reply).locate("What is the capital of France?", answer, words(answer))
    assert span.text == "Paris"
    assert span.source.startswith("heuristic (llm extraction failed")


def test_token_offsets_cover_the_decoded_text(tiny_tokenizer: object) -> None:
    ids = tiny_tokenizer("the capital of france is paris .")["input_ids"]  # type: ignore[operator]
    text, offsets = token_offsets(tiny_tokenizer.decode, ids)  # type: ignore[attr-defined]
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(a <= b for a, b in offsets) and all(offsets[i][1] == offsets[i + 1][0] for i in range(len(offsets) - 1))
    assert "".join(text[a:b] for a, b in offsets) == text


def test_token_offsets_handle_multibyte_characters(bundled: tuple[object, object]) -> None:
    _, tokenizer = bundled
    answer = "São Tomé is 東京 ✓."
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    text, offsets = token_offsets(tokenizer.decode, ids)  # type: ignore[attr-defined]
    assert text == answer
    assert "".join(text[a:b] for a, b in offsets) == text


TURKISH = "Not İzmir, İstanbul or İznik: the capital is Ankara. It is big."


def test_explicit_span_offsets_survive_characters_whose_lowercase_is_longer() -> None:
    """ "İ".lower() is two characters: searching a lowercased copy used to score ['ara', '.', ' It']."""
    offsets = words(TURKISH)
    span = ExplicitSpan(substring="Ankara").locate("q", TURKISH, offsets)
    assert span.text == "Ankara" and [TURKISH[a:b] for a, b in offsets[span.start : span.stop]] == [" Ankara"]
    assert ExplicitSpan(substring="ankara").locate("q", TURKISH, offsets) == span
    istanbul = ExplicitSpan(substring="İSTANBUL").locate("q", TURKISH, offsets)
    assert istanbul.text == "İstanbul"


def test_llm_extraction_offsets_survive_characters_whose_lowercase_is_longer() -> None:
    offsets = words(TURKISH)
    span = LLMExtractionLocalizer(lambda _: " ankara\n").locate("What is the capital of Turkey?", TURKISH, offsets)
    assert span.source == "llm" and span.text == "Ankara"
    assert [TURKISH[a:b] for a, b in offsets[span.start : span.stop]] == [" Ankara"]


def test_the_guard_scores_exactly_the_named_tokens(bundled: tuple[object, object]) -> None:
    from guardrail import Guard

    model, tokenizer = bundled
    verdict = Guard(model, tokenizer, name="bundled").check("What is the capital of Turkey?", TURKISH, span="Ankara")
    assert "".join(verdict.best.tokens[verdict.span.start : verdict.span.stop]).strip() == "Ankara"
