"""Prompts: exactly what the model is fed for a question, a feedback retry or a given answer,
and the decoding options an attempt accepts.

- Chat messages go through the tokenizer's chat template; roles are checked, and text that
  contains the tokenizer's control tokens (``<|im_end|>``, ...) is refused, so a question cannot
  forge a system turn. Tools (and assistant tool calls, tool results) are rendered by the
  template when it supports them, and refused with a reason when it does not.
- The tokenizer's own BOS convention is followed for every prompt, templated or raw (Gemma
  answers garbage without ``<bos>``; GPT-2 and SmolLM2 add none).
- A feedback retry continues the conversation the same way everywhere: the previous answer as
  an assistant turn, then the feedback as a user turn; for a raw prompt, the same two turns as
  text (``prompt + answer + "\\n\\n" + feedback + "\\n\\n"``).
- Answers are tokenized alone, without special tokens, as ``generate`` would have produced them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from guardrail.errors import InvalidInputError
from guardrail.policy import RetryStep
from guardrail.tools import check_tools, template_supports_tools
from guardrail.validation import check_bool, check_finite, check_int, check_str, check_text

__all__ = ["GENERATION_OPTIONS", "ROLES", "Message", "Prompt", "PromptBuilder", "check_generation"]

Message = Mapping[str, Any]
ROLES = ("system", "user", "assistant", "tool")
_KEYS = {
    "system": {"content"},
    "user": {"content"},
    "assistant": {"content", "tool_calls"},
    "tool": {"content", "tool_call_id", "name"},
}


@dataclass(frozen=True)
class Prompt:
    """A question as the guard sees it.

    Attributes:
        question: the text the localizer treats as the question.
        text: the exact text fed to the model for a first attempt.
        messages: the chat messages when templated (``()`` for a raw prompt).
        tools: the tool specs rendered into the prompt.
        sources: the text a grounded calibration looks the answer's span up in; ``None``: the
            prompt's own (:func:`guardrail.grounding.prompt_sources`).
    """

    question: str
    text: str
    messages: tuple[Message, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    sources: str | None = None


class PromptBuilder:
    """Builds prompts and token ids for one tokenizer (never modifying it)."""

    def __init__(self, tokenizer: Any, system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self._encode = private_encoder(tokenizer)
        self.bos = _bos_prefix(self._encode)
        self.control = _control_tokens(tokenizer)
        if system_prompt is not None:
            self._check_controls("system_prompt", system_prompt)
            if self.has_template:  # a template that refuses a system turn fails here, not at the first question
                self.template([{"role": "system", "content": system_prompt}, {"role": "user", "content": "?"}])

    def prompt(
        self,
        question: object,
        *,
        raw: bool = False,
        localize_in: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        sources: str | None = None,
    ) -> Prompt:
        """The :class:`Prompt` of a question string or a list of chat messages (and tools)."""
        if not isinstance(raw, bool):
            raise InvalidInputError(f"`raw` must be a bool, got {raw!r}")
        if localize_in is not None:
            check_text("localize_in", localize_in)
        if sources is not None:
            check_str("sources", sources)
        specs = tuple(self._check_tools(tools, raw)) if tools else ()
        if isinstance(question, str):
            check_text("question", question)
            if raw or not self.has_template:
                return Prompt(localize_in or question, question, sources=sources)
            self._check_controls("question", question)
            messages: tuple[Message, ...] = ({"role": "user", "content": question},)
        else:
            messages = self._check_messages(question)
            if raw:
                raise InvalidInputError("`raw=True` needs a string prompt, got chat messages")
        if self.system_prompt and messages[0]["role"] != "system":
            messages = ({"role": "system", "content": self.system_prompt}, *messages)
        users = [m["content"] for m in messages if m["role"] == "user" and m["content"].strip()]
        question_text = localize_in or (users[-1] if users else messages[-1]["content"] or "")
        return Prompt(question_text, self.template(messages, specs), messages, specs, sources)

    @property
    def has_template(self) -> bool:
        """Whether the tokenizer has a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def template(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = ()) -> str:
        """The chat template applied to ``messages`` (and ``tools``) with the generation prompt."""
        if not self.has_template:
            raise InvalidInputError("the tokenizer has no chat template; pass a string prompt with `raw=True`")
        extra = {"tools": [dict(t) for t in tools]} if tools else {}
        try:
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=False, **extra
            )
        except Exception as exc:  # jinja2 errors and the template's own raise_exception(...)
            hint = " (this template may not accept a system message)" if messages[0]["role"] == "system" else ""
            raise InvalidInputError(f"the tokenizer's chat template refused these messages{hint}: {exc}") from exc
        return str(text)

    def text(self, prompt: Prompt, step: RetryStep) -> str:
        """The text fed for attempt ``step``: the prompt, plus the feedback turns if any."""
        follow_up = step.follow_up()
        if not follow_up:
            return prompt.text
        self._check_controls("feedback", step.feedback or "")
        if prompt.messages:
            return self.template([*prompt.messages, *follow_up], prompt.tools)
        return f"{prompt.text}{step.previous_answer}\n\n{step.feedback}\n\n"

    def ids(self, prompt: Prompt, step: RetryStep) -> list[int]:
        """Token ids of :meth:`text`, with the tokenizer's BOS convention."""
        ids = self._encode(self.text(prompt, step), False)
        if self.bos and ids[: len(self.bos)] != self.bos:
            ids = self.bos + ids
        if not ids:
            raise InvalidInputError(f"the prompt {prompt.text!r} has no tokens")
        return ids

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of a given answer, alone and without special tokens."""
        return self._encode(answer, False)

    def _check_messages(self, messages: object) -> tuple[Message, ...]:
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
            raise InvalidInputError(f"`question` must be a str or a non-empty list of chat messages, got {messages!r}")
        checked = [self._check_message(i, m) for i, m in enumerate(messages)]
        if not any(m["content"].strip() or m.get("tool_calls") for m in checked):
            raise InvalidInputError(f"every chat message is empty: {messages!r}")
        try:
            "".join(m["content"] for m in checked).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"a chat message is not valid text: {exc.reason}") from None
        return tuple(checked)

    def _check_message(self, i: int, m: object) -> dict[str, Any]:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InvalidInputError(f"message {i} must be a mapping with str `role` and `content`, got {m!r}")
        role = m["role"]
        if role not in ROLES:
            raise InvalidInputError(f"message {i} has role {role!r}; roles are {ROLES}")
        extra = set(m) - {"role"} - _KEYS[role]
        if extra:
            raise InvalidInputError(f"message {i} ({role}) has keys {sorted(extra)}; it takes {sorted(_KEYS[role])}")
        if (role == "tool" or m.get("tool_calls")) and not template_supports_tools(self.tokenizer):
            kind = "result" if role == "tool" else "call"
            raise InvalidInputError(
                f"message {i} is a tool {kind}, but this tokenizer's chat template renders no tools"
            )
        calls = m.get("tool_calls")
        if calls is not None and (not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls)):
            raise InvalidInputError(f"message {i}: `tool_calls` must be a list of call dicts, got {calls!r}")
        for key in ("content", "tool_call_id", "name"):
            if key in m:
                value = m[key]
                if not isinstance(value, str):
                    raise InvalidInputError(f"message {i}: `{key}` must be a str, got {value!r}")
                self._check_controls(f"message {i}", value)
        return {k: (list(v) if k == "tool_calls" else v) for k, v in m.items()}

    def _check_tools(self, tools: object, raw: bool) -> list[dict[str, Any]]:
        specs = check_tools(tools)
        if raw or not template_supports_tools(self.tokenizer):
            where = "a raw prompt" if raw else "this tokenizer's chat template"
            raise InvalidInputError(
                f"`tools` were given but {where} renders no tools; use a model whose chat template supports "
                "tool calling (Qwen2.5, Llama-3.1, Hermes-style fine-tunes, ...)"
            )
        return specs

    def _check_controls(self, name: str, text: str) -> None:
        found = sorted(t for t in self.control if t in text)
        if found:
            raise InvalidInputError(
                f"{name} contains the tokenizer's control token(s) {found}, which the chat template would read "
                "as turn markers; remove them from the text"
            )


Encoder = Callable[[str, bool], list[int]]
"""``(text, add_special_tokens) -> token ids``."""

_ENCODERS: weakref.WeakKeyDictionary[Any, tuple[int, Encoder]] = weakref.WeakKeyDictionary()
_ENCODERS_LOCK = threading.Lock()


def private_encoder(tokenizer: Any) -> Encoder:
    """Tokenize like ``tokenizer(text, add_special_tokens=...)["input_ids"]`` without touching its
    shared state.

    A fast tokenizer keeps padding and truncation settings on its Rust backend and sets them on
    every call, so another thread's ``tokenizer(..., padding="max_length")`` or ``truncation=True``
    could pad or cut the guard's prompt in between, and the guard's own calls would reset the
    other thread's settings. The guard therefore encodes with a private copy of the backend that
    never pads or truncates (one copy per tokenizer; a guard built after tokens were added gets a
    fresh one). Tokenizers of other kinds keep no such state between calls and are called directly.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    faithful = isinstance(tokenizer, TokenizersBackend) and not _overrides_encoding(tokenizer)
    if not faithful or not isinstance(backend, Tokenizer):
        return lambda text, special: list(tokenizer(text, add_special_tokens=special)["input_ids"])
    size = len(tokenizer)
    with _ENCODERS_LOCK:
        cached = _ENCODERS.get(tokenizer)
        if cached is None or cached[0] != size:
            private = Tokenizer.from_str(backend.to_str())
            private.no_padding()
            private.no_truncation()
            private.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
            cached = _ENCODERS[tokenizer] = (size, _encoder_of(private))
        return cached[1]


def _encoder_of(backend: Tokenizer) -> Encoder:
    return lambda text, special: list(backend.encode(text, add_special_tokens=special).ids)


def _overrides_encoding(tokenizer: Any) -> bool:
    """Whether the tokenizer's class changes how text is encoded (then only calling it is faithful)."""
    names = ("__call__", "_encode_plus")
    return any(getattr(type(tokenizer), name) is not getattr(TokenizersBackend, name) for name in names)


def _bos_prefix(encode: Encoder) -> list[int]:
    """The ids the tokenizer puts before a text under its own convention (``[]`` for none)."""
    try:
        plain = encode("a", False)
        full = encode("a", True)
    except Exception:  # a tokenizer without special-token handling: no convention to follow
        return []
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def _control_tokens(tokenizer: Any) -> frozenset[str]:
    """Strings a chat template uses as turn markers: the tokenizer's special tokens, and its added
    tokens that occur in the template's text (``<tool_call>`` is not special in Qwen, say)."""
    tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
    template = getattr(tokenizer, "chat_template", None)
    text = template if isinstance(template, str) else str(template or "")  # or named templates
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for token in decoder.values():
        content = getattr(token, "content", None)
        marker = isinstance(content, str) and content in text and not content.isspace()
        if isinstance(content, str) and (getattr(token, "special", False) or marker):
            tokens.add(content)
    return frozenset(t for t in tokens if isinstance(t, str) and len(t) > 1)


# -- decoding options ----------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    return check_int(name, value, minimum=1)


def _count(name: str, value: object) -> int:
    return check_int(name, value, minimum=0)


def _positive(name: str, value: object) -> float:
    return check_finite(name, value, positive=True)


def _probability(name: str, value: object) -> float:
    number = check_finite(name, value)
    if not 0 < number <= 1:
        raise InvalidInputError(f"`{name}` must be in (0, 1], got {value!r}")
    return number


def _stop_strings(name: str, value: object) -> list[str]:
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, (list, tuple)) or not strings:
        raise InvalidInputError(f"`{name}` must be a str or a non-empty list of str, got {value!r}")
    return [check_text(name, s) for s in strings]


def _seed(name: str, value: object) -> int:
    return check_int(name, value, minimum=0, maximum=2**63 - 1)


GENERATION_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "max_new_tokens": _positive_int,
    "min_new_tokens": _count,
    "do_sample": check_bool,
    "temperature": _positive,
    "top_k": _count,
    "top_p": _probability,
    "min_p": _probability,
    "typical_p": _probability,
    "repetition_penalty": _positive,
    "no_repeat_ngram_size": _count,
    "stop_strings": _stop_strings,
    "max_time": _positive,
    "seed": _seed,
}
"""Decoding options an attempt accepts, each with its check. Anything else (beam search,
``generation_config``, ``stopping_criteria``, ``pad_token_id``, ``input_ids``, ...) is refused:
the guard owns those, and other decoding modes do not emit one token per raw-logit row."""


def check_generation(options: Mapping[str, Any]) -> dict[str, Any]:
    """Checked decoding options; every problem is an :class:`InvalidInputError` naming it."""
    unknown = sorted(set(options) - set(GENERATION_OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"unsupported decoding option(s) {unknown}; the guard accepts {sorted(GENERATION_OPTIONS)}"
        )
    checked = {name: GENERATION_OPTIONS[name](name, value) for name, value in options.items()}
    low, high = checked.get("min_new_tokens"), checked.get("max_new_tokens")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        raise InvalidInputError(f"`min_new_tokens`={low} exceeds `max_new_tokens`={high}")
    return checked
