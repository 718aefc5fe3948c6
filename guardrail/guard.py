"""The guard: model + tokenizer + capture + localizer + calibration + policy.

>>> guard = Guard.default()                      # bundled SmolLM2-135M-Instruct
>>> verdict = guard.ask("What is the capital of Australia?")
>>> verdict.action, verdict.answer, verdict.score
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from guardrail.calibration import Calibration, ModelFingerprint, fingerprint
from guardrail.capture import generate_with_scores, model_device, score_teacher_forced
from guardrail.errors import ContextLengthError, InvalidInputError, ModelError
from guardrail.loading import DEFAULT_MODEL_NAME, load_default, load_local
from guardrail.localize import ExplicitSpan, Localizer, Span, make_localizer, token_offsets
from guardrail.locks import model_lock
from guardrail.policy import Action, Policy
from guardrail.scores import TokenScores, TokenStep
from guardrail.streaming import stream_generation
from guardrail.verdict import Attempt, Verdict

__all__ = ["Guard"]

_SHIPPED_CALIBRATION = Path(__file__).parent / "data" / "default_calibration.json"


Message = Mapping[str, str]
PromptLike = str | Sequence[Message]


@dataclass(frozen=True)
class _Prompt:
    """What the user asked, the chat messages (if templated) and the exact text fed to the model."""

    question: str
    text: str
    messages: tuple[Message, ...] = ()


class Guard:
    """Generates answers with a local causal LM and judges them by spilled energy.

    Args:
        model: a loaded Hugging Face causal LM (``AutoModelForCausalLM``), any device/dtype.
        tokenizer: its tokenizer.
        calibration: how to score and where the threshold lies; default
            :meth:`Calibration.uncalibrated` (the paper's ΔE-min, negated).
        localizer: a localizer name (``"heuristic"``, ``"llm"``, ``"whole"``) or object;
            default: the calibration's localizer.
        policy: what to do above the threshold; default flag.
        max_new_tokens: answer length limit, >= 1.
        system_prompt: optional system message for chat-templated prompts.
        name: model name for the calibration fingerprint; default the model's ``name_or_path``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        calibration: Calibration | None = None,
        localizer: str | Localizer | None = None,
        policy: Policy | None = None,
        max_new_tokens: int = 64,
        system_prompt: str | None = None,
        name: str | None = None,
    ) -> None:
        vocab_size = _check_model(model, tokenizer)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidInputError(f"`max_new_tokens` must be an int >= 1, got {max_new_tokens!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt
        model_name = name or Path(str(getattr(model, "name_or_path", "") or "model")).name
        self.fingerprint: ModelFingerprint = fingerprint(model_name, tokenizer, vocab_size)
        self.calibration = calibration or Calibration.uncalibrated()
        self.calibration.check_model(self.fingerprint)
        self.localizer = self.make_localizer(localizer or self.calibration.localizer)
        self.policy = policy or Policy()
        self._eos = _eos_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos[0]

    @classmethod
    def default(cls, **kwargs: Any) -> Guard:
        """The bundled SmolLM2-135M-Instruct with its shipped calibration (if present)."""
        model, tokenizer = load_default()
        if "calibration" not in kwargs and _SHIPPED_CALIBRATION.is_file():
            kwargs["calibration"] = Calibration.load(_SHIPPED_CALIBRATION)
        return cls(model, tokenizer, name=DEFAULT_MODEL_NAME, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.float32,
        device: str | None = None,
        **kwargs: Any,
    ) -> Guard:
        """Load a model from a local directory or ``.gguf`` file and guard it."""
        model, tokenizer = load_local(path, dtype=dtype, device=device)
        return cls(model, tokenizer, **kwargs)

    def with_policy(self, policy: Policy) -> Guard:
        """The same guard (same model, tokenizer, calibration, localizer) with another policy."""
        if not isinstance(policy, Policy):
            raise InvalidInputError(f"`policy` must be a guardrail.Policy, got {type(policy).__name__}: {policy!r}")
        twin = copy.copy(self)
        twin.policy = policy
        return twin

    # -- public entry points -------------------------------------------------------------

    def ask(
        self, question: PromptLike, *, raw: bool = False, localize_in: str | None = None, **generation: Any
    ) -> Verdict:
        """Answer ``question`` and judge the answer (retrying if the policy says so).

        Args:
            question: a question (chat-templated as one user message, after the guard's
                ``system_prompt``), or a list of chat messages ``{"role", "content"}``.
            raw: feed a string ``question`` to the model as is, without the chat template.
            localize_in: the text the localizer treats as the question (words copied from it
                are not the answer); default: ``question`` or its last user message. In RAG,
                pass the user's query rather than the prompt holding the retrieved context.
            **generation: decoding of the first attempt (``max_new_tokens``, ``do_sample``,
                ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
                ``stop_strings``, and ``seed`` for reproducible sampling); energies always
                come from the raw logits.
        """
        prompt = self._prompt(question, raw=raw, localize_in=localize_in)
        return self._ask_prompts([prompt], batch_size=1, generation=generation)[0]

    def ask_batch(
        self, questions: Sequence[PromptLike], *, batch_size: int = 8, raw: bool = False, **generation: Any
    ) -> list[Verdict]:
        """Answer and judge several questions, ``batch_size`` at a time (left padding)."""
        if isinstance(questions, str) or not isinstance(questions, Sequence) or not questions:
            raise InvalidInputError(f"`questions` must be a non-empty list of questions, got {questions!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        prompts = [self._prompt(q, raw=raw) for q in questions]
        return self._ask_prompts(prompts, batch_size=batch_size, generation=generation)

    def _ask_prompts(self, prompts: list[_Prompt], *, batch_size: int, generation: Mapping[str, Any]) -> list[Verdict]:
        history: list[list[Attempt]] = [[] for _ in prompts]
        for attempt in range(1, self.policy.attempts + 1):
            todo = [i for i, h in enumerate(history) if not h or self._retry_wanted(h)]
            if not todo:
                break
            change = self.policy.retry_decoding(attempt)
            for chunk in _chunks(todo, batch_size):
                found = self._attempt([prompts[i] for i in chunk], [history[i] for i in chunk], change, generation)
                for i, result in zip(chunk, found, strict=True):
                    history[i].append(result)
        return [self._verdict(p.question, h) for p, h in zip(prompts, history, strict=True)]

    def stream(
        self, question: PromptLike, *, raw: bool = False, localize_in: str | None = None, **generation: Any
    ) -> Iterator[str | TokenStep | Verdict]:
        """Answer ``question`` while streaming; judge the answer at the end.

        Yields, in order of availability: ``str`` text deltas as tokens are produced,
        :class:`TokenStep` energies (each one token late, since spilled energy needs the next
        step), and finally the :class:`Verdict`. Streaming makes one attempt: under a retry
        policy the verdict applies ``after_retries``. Closing the generator early stops
        generation at the next token. Arguments as for :meth:`ask`.
        """
        prompt = self._prompt(question, raw=raw, localize_in=localize_in)
        kwargs = self._generation_kwargs({}, generation)
        enc = self._batch([prompt.text], int(kwargs["max_new_tokens"]))

        def generate(**streaming: Any) -> TokenScores:
            with _seeded(generation.get("seed"), model_device(self.model)):
                rows, _ = generate_with_scores(
                    self.model,
                    enc["input_ids"],
                    enc["attention_mask"],
                    eos_token_ids=self._eos,
                    pad_token_id=self._pad,
                    **streaming,
                    **kwargs,
                )
            return rows[0]

        scores = yield from stream_generation(generate, self.tokenizer, self._eos)
        attempt = self._judge(prompt.question, scores, _describe({}, kwargs), self.localizer, enc["input_ids"].shape[1])
        yield self._verdict(prompt.question, [attempt])

    def check(
        self,
        question: PromptLike,
        answer: str,
        *,
        span: str | tuple[int, int] | None = None,
        raw: bool = False,
        localize_in: str | None = None,
    ) -> Verdict:
        """Judge a given answer with one teacher-forced pass (no generation, no retry).

        Args:
            question: the question (chat-templated unless ``raw``).
            answer: the answer text to score.
            span: the exact answer as a substring or ``(start, end)`` characters of ``answer``;
                default: the guard's localizer.
            raw: feed ``question`` as the prompt text as is.
            localize_in: as for :meth:`ask`.
        """
        prompt = self._prompt(question, raw=raw, localize_in=localize_in)
        _check_text("answer", answer)
        # Tokenized apart, as generate() would have produced the answer after the prompt.
        prompt_ids, answer_ids = self._encode(prompt.text), self._encode(answer)
        self._check_length(len(prompt_ids), len(answer_ids))
        scores = score_teacher_forced(self.model, prompt_ids, answer_ids)
        localizer: Localizer = self.localizer
        if span is not None:
            localizer = (
                ExplicitSpan(substring=span) if isinstance(span, str) else ExplicitSpan(chars=(span[0], span[1]))
            )
        attempt = self._judge(prompt.question, scores, "given", localizer, len(prompt_ids))
        return self._verdict(prompt.question, [attempt])

    # -- steps ---------------------------------------------------------------------------

    def _prompt(self, question: PromptLike, *, raw: bool = False, localize_in: str | None = None) -> _Prompt:
        if localize_in is not None:
            _check_text("localize_in", localize_in)
        if isinstance(question, str):
            _check_text("question", question)
            if raw or not getattr(self.tokenizer, "chat_template", None):
                return _Prompt(localize_in or question, question)
            messages: tuple[Message, ...] = ({"role": "user", "content": question},)
        else:
            messages = _check_messages(question)
            if raw:
                raise InvalidInputError("`raw=True` needs a string prompt, got chat messages")
        if self.system_prompt and messages[0].get("role") != "system":
            messages = ({"role": "system", "content": self.system_prompt}, *messages)
        users = [m["content"] for m in messages if m.get("role") == "user"]
        return _Prompt(
            localize_in or (users[-1] if users else messages[-1]["content"]), self._template(messages), messages
        )

    def _template(self, messages: Sequence[Message]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInputError("the tokenizer has no chat template; pass a string prompt with `raw=True`")
        return str(self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False))

    def _encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def _check_length(self, prompt_tokens: int, new_tokens: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and prompt_tokens + new_tokens > limit:
            raise ContextLengthError(
                f"prompt of {prompt_tokens} tokens + {new_tokens} new tokens exceeds the model's "
                f"context of {limit} tokens; shorten the question or lower `max_new_tokens`"
            )

    def _retry_wanted(self, history: list[Attempt]) -> bool:
        return min(a.score for a in history) > self.calibration.threshold

    def _attempt(
        self,
        prompts: list[_Prompt],
        histories: list[list[Attempt]],
        change: Mapping[str, Any],
        generation: Mapping[str, Any],
    ) -> list[Attempt]:
        texts = [self._with_feedback(p, h, change.get("feedback")) for p, h in zip(prompts, histories, strict=True)]
        kwargs = self._generation_kwargs(change, generation)
        enc = self._batch(texts, int(kwargs["max_new_tokens"]))
        with _seeded(change.get("seed", generation.get("seed")), model_device(self.model)):
            rows, _ = generate_with_scores(
                self.model,
                enc["input_ids"],
                enc["attention_mask"],
                eos_token_ids=self._eos,
                pad_token_id=self._pad,
                **kwargs,
            )
        label = _describe(change, kwargs)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        return [
            self._judge(p.question, s, label, self.localizer, n) for p, s, n in zip(prompts, rows, lengths, strict=True)
        ]

    def _generation_kwargs(self, change: Mapping[str, Any], generation: Mapping[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False, **generation}
        kwargs.pop("seed", None)  # applied by _seeded around generate
        if change:
            kwargs.update(do_sample=True, temperature=change["temperature"], top_k=0, top_p=1.0)
        if kwargs.get("stop_strings"):
            kwargs["tokenizer"] = self.tokenizer
        return kwargs

    def _batch(self, texts: list[str], max_new_tokens: int) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` on the model's device."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        self._check_length(enc["input_ids"].shape[1], max_new_tokens)
        device = model_device(self.model)
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def _with_feedback(self, prompt: _Prompt, history: list[Attempt], feedback: str | None) -> str:
        if feedback is None or not history or not prompt.messages:
            return prompt.text
        follow_up = ({"role": "assistant", "content": history[-1].answer}, {"role": "user", "content": feedback})
        return self._template([*prompt.messages, *follow_up])

    def _judge(
        self, question: str, scores: TokenScores, decoding: str, localizer: Localizer, prompt_tokens: int
    ) -> Attempt:
        answer, offsets = token_offsets(lambda ids: self.tokenizer.decode(ids), scores.token_ids.tolist())
        tokens = tuple(answer[a:b] for a, b in offsets)
        if not answer.strip():
            empty = Span(0, 0, 0, 0, "", "empty answer: cannot be scored")
            return Attempt(answer, tokens, scores, empty, math.inf, decoding, prompt_tokens)
        span = localizer.locate(question, answer, offsets)
        return Attempt(answer, tokens, scores, span, self.calibration.score(scores, span), decoding, prompt_tokens)

    def _verdict(self, question: str, attempts: list[Attempt]) -> Verdict:
        chosen = min(range(len(attempts)), key=lambda i: attempts[i].score)
        action = self.policy.decide(attempts[chosen].score, self.calibration.threshold)
        text = self.policy.abstain_text if action is Action.ABSTAIN else attempts[chosen].answer
        return Verdict(
            question=question,
            text=text,
            action=action,
            threshold=self.calibration.threshold,
            attempts=tuple(attempts),
            chosen=chosen,
            calibration=self.calibration.describe(),
        )

    def make_localizer(self, localizer: str | Localizer) -> Localizer:
        """A localizer by name (``"heuristic"``, ``"llm"``, ``"whole"``) or the object itself;
        ``"llm"`` extracts the answer with this guard's model."""
        return make_localizer(localizer, self._complete)

    def _complete(self, instruction: str) -> str:
        """Greedy short completion of a chat message (used by the LLM-extraction localizer)."""
        text = self._prompt(instruction).text
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model_device(self.model))
        with model_lock(self.model), torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=24,
                do_sample=False,
                pad_token_id=self._pad,
                stop_strings=["\n"],
                tokenizer=self.tokenizer,
            )
        return str(self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(f"`{name}` must be a str, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise InvalidInputError(f"`{name}` must contain a non-space character, got {value!r}")


def _check_messages(messages: object) -> tuple[Message, ...]:
    if not isinstance(messages, Sequence) or not messages:
        raise InvalidInputError(f"`question` must be a str or a non-empty list of chat messages, got {messages!r}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InvalidInputError(f"message {i} must be a mapping with str `role` and `content`, got {m!r}")
    if not any(m["content"].strip() for m in messages):
        raise InvalidInputError(f"every chat message is empty: {messages!r}")
    return tuple(dict(m) for m in messages)


def _check_model(model: Any, tokenizer: Any) -> int:
    """Validate the pair; return the model's vocabulary size (LM-head rows)."""
    if not callable(getattr(model, "generate", None)) or not callable(getattr(model, "get_output_embeddings", None)):
        raise ModelError(f"`model` must be a Hugging Face causal LM with `generate`, got {type(model).__name__}")
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ModelError(
            f"`model` ({type(model).__name__}) has no LM head, so no logits to score; load it with AutoModelForCausalLM"
        )
    if not callable(getattr(tokenizer, "get_vocab", None)) or not callable(tokenizer):
        raise ModelError(f"`tokenizer` must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    vocab_size = int(head.weight.shape[0])
    if len(tokenizer) > vocab_size:
        raise ModelError(
            f"tokenizer has {len(tokenizer)} tokens but the model's LM head has {vocab_size} rows; "
            "they do not belong together"
        )
    return vocab_size


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    if not ids:
        raise ModelError("neither the model's generation config nor the tokenizer defines an EOS token")
    return list(dict.fromkeys(ids))


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG inside the block only (no effect when ``seed`` is None)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _describe(change: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str:
    if not change:
        if kwargs.get("do_sample"):
            return f"sample(temperature={kwargs.get('temperature', 1.0)})"
        return "greedy"
    label = f"sample(temperature={change['temperature']}, seed={change['seed']})"
    return label + " + feedback" if "feedback" in change else label
