"""The guard: model + tokenizer + capture + localizer + calibration + policy.

>>> guard = Guard.default()                      # bundled SmolLM2-135M-Instruct
>>> verdict = guard.ask("What is the capital of Australia?")
>>> verdict.action, verdict.answer, verdict.score

Every entry point has an async twin (:meth:`Guard.aask`, :meth:`Guard.astream`,
:meth:`Guard.acheck`) that runs the model in a worker thread while holding the model's asyncio
lock, so waiting tasks wait in their event loop; cancelling one stops generation at the next
token.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from guardrail.attempts import AttemptLoop, Decision, Judged
from guardrail.calibration import Calibration, ModelFingerprint, fingerprint
from guardrail.capture import (
    check_generate,
    generate_with_scores,
    honours_left_padding,
    model_device,
    score_teacher_forced,
    stop_string_criteria,
)
from guardrail.errors import ContextLengthError, InvalidInputError, ModelError
from guardrail.grounding import prompt_sources, span_grounding
from guardrail.loading import DEFAULT_MODEL_NAME, load_default, load_local
from guardrail.localize import ExplicitSpan, Localizer, Span, WholeAnswer, make_localizer, token_offsets
from guardrail.locks import async_model_lock, model_lock
from guardrail.policy import Policy, RetryStep
from guardrail.prompts import GENERATION_OPTIONS, Message, Prompt, PromptBuilder, check_generation
from guardrail.scores import TokenScores, TokenStep
from guardrail.streaming import LiveGeneration
from guardrail.validation import check_int, check_str, check_text
from guardrail.verdict import Attempt, Verdict

__all__ = ["GENERATION_OPTIONS", "Guard"]

_FLAG = Policy()

PromptLike = str | Sequence[Message]
R = TypeVar("R")


class Guard:
    """Generates answers with a local causal LM and judges them by spilled energy.

    Args:
        model: a loaded Hugging Face causal LM (``AutoModelForCausalLM``), any device/dtype, in
            eval mode. The guard never modifies it (nor the tokenizer).
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
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
        self.system_prompt = None if system_prompt is None else check_text("system_prompt", system_prompt)
        if name is not None:
            check_text("name", name)
        if calibration is not None and not isinstance(calibration, Calibration):
            raise InvalidInputError(
                f"`calibration` must be a guardrail.Calibration (load a file with Calibration.load), "
                f"got {type(calibration).__name__}: {calibration!r}"
            )
        if policy is not None and not isinstance(policy, Policy):
            raise InvalidInputError(f"`policy` must be a guardrail.Policy, got {type(policy).__name__}: {policy!r}")
        model_name = name or Path(str(getattr(model, "name_or_path", "") or "model")).name
        self.fingerprint: ModelFingerprint = fingerprint(model_name, tokenizer, vocab_size, model)
        self.calibration = calibration or Calibration.uncalibrated()
        self.calibration.check_model(self.fingerprint)
        self.localizer = self.make_localizer(localizer if localizer is not None else self.calibration.localizer)
        self.policy = policy or Policy()
        self._eos = _eos_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos[0]
        self._prompts = PromptBuilder(tokenizer, self.system_prompt)

    @classmethod
    def default(cls, **kwargs: Any) -> Guard:
        """The bundled SmolLM2-135M-Instruct with its shipped calibration (``Calibration.bundled()``)."""
        model, tokenizer = load_default()
        if "calibration" not in kwargs:
            kwargs["calibration"] = Calibration.bundled("default")
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

    def with_calibration(self, calibration: Calibration) -> Guard:
        """The same guard (same model, tokenizer, policy) scoring with another calibration (see
        :meth:`with_grounding` for RAG prompts). The guard's localizer is kept when the
        calibration names the same localizer as the guard's calibration, else the new
        calibration's localizer is made."""
        if not isinstance(calibration, Calibration):
            raise InvalidInputError(
                f"`calibration` must be a guardrail.Calibration, got {type(calibration).__name__}: {calibration!r}"
            )
        calibration.check_model(self.fingerprint)
        twin = copy.copy(self)
        twin.calibration = calibration
        if calibration.localizer != self.calibration.localizer:
            twin.localizer = self.make_localizer(calibration.localizer)
        return twin

    def with_grounding(self) -> Guard:
        """The guard for prompts that carry the answer's sources (RAG): its calibration plus the
        grounding feature (:meth:`Calibration.with_grounding`) where that applies
        (:attr:`Calibration.can_ground`), else this guard itself. What the LlamaIndex engines
        and evaluator score grounded calls with."""
        if not self.calibration.can_ground or isinstance(self.localizer, WholeAnswer):
            return self  # nothing localized to look up (a whole-answer span is not checked)
        return self.with_calibration(self.calibration.with_grounding())

    def render(
        self,
        question: PromptLike,
        *,
        raw: bool = False,
        step: RetryStep | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The exact text the model is fed for ``question`` at attempt ``step`` (default: the first)."""
        return self._prompts.text(self._prompt(question, raw=raw, tools=tools), step or RetryStep())

    def prompt_ids(
        self,
        question: PromptLike,
        *,
        raw: bool = False,
        step: RetryStep | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """The exact token ids the model is fed for ``question`` (BOS included when the tokenizer adds one)."""
        return self._prompts.ids(self._prompt(question, raw=raw, tools=tools), step or RetryStep())

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` alone, without special tokens (how an answer is tokenized)."""
        check_str("text", text)
        return self._prompts.answer_ids(text) if text else []

    def make_localizer(self, localizer: str | Localizer) -> Localizer:
        """A localizer by name (``"heuristic"``, ``"llm"``, ``"whole"``) or the object itself;
        ``"llm"`` extracts the answer with this guard's model."""
        return make_localizer(localizer, self._complete)

    # -- public entry points -------------------------------------------------------------

    def ask(
        self,
        question: PromptLike,
        *,
        raw: bool = False,
        localize_in: str | None = None,
        step: RetryStep | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        sources: str | None = None,
        **generation: Any,
    ) -> Verdict:
        """Answer ``question`` and judge the answer (retrying if the policy says so).

        Args:
            question: a question (chat-templated as one user message, after the guard's
                ``system_prompt``), or a list of chat messages ``{"role", "content"}``.
            raw: feed a string ``question`` to the model as is, without the chat template.
            localize_in: the text the localizer treats as the question (words copied from it
                are not the answer); default: ``question`` or its last user message. In RAG,
                pass the user's query rather than the prompt holding the retrieved context.
            sources: the text a grounded calibration (:attr:`Calibration.grounded`) looks the
                answer's span up in; default: the prompt's system, user and tool turns. Pass the
                retrieved passages and the user's own words when the prompt also holds text the
                model wrote (a question it condensed from the conversation).
            step: make exactly this attempt of a caller's own attempt loop (its decoding and
                feedback turn, see :mod:`guardrail.attempts`) instead of running the policy;
                the verdict then only allows or flags.
            tools: tool specs for a chat template that renders tools (OpenAI-style function
                dicts); the model may answer with a tool call, which
                :func:`guardrail.tools.parse_tool_calls` reads back. Refused with a reason when
                the template has no tool support.
            **generation: decoding of the first attempt, one of :data:`GENERATION_OPTIONS`
                (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``,
                ``repetition_penalty``, ``stop_strings``, ``seed``, ...); energies always come
                from the raw logits.
        """
        prompt = self._prompt(question, raw=raw, localize_in=localize_in, tools=tools, sources=sources)
        return self._ask([prompt], 1, generation, step)[0]

    def ask_batch(
        self, questions: Sequence[PromptLike], *, batch_size: int = 8, raw: bool = False, **generation: Any
    ) -> list[Verdict]:
        """Answer and judge several questions, ``batch_size`` at a time (left padding)."""
        if isinstance(questions, str) or not isinstance(questions, Sequence) or not questions:
            raise InvalidInputError(f"`questions` must be a non-empty list of questions, got {questions!r}")
        check_int("batch_size", batch_size, minimum=1)
        prompts = [self._prompt(q, raw=raw) for q in questions]
        return self._ask(prompts, batch_size, generation, None)

    def stream(
        self,
        question: PromptLike,
        *,
        raw: bool = False,
        localize_in: str | None = None,
        step: RetryStep | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        sources: str | None = None,
        **generation: Any,
    ) -> Generator[str | TokenStep | Verdict, None, None]:
        """Answer ``question`` while streaming; judge the answer at the end.

        Yields, in order of availability: ``str`` text deltas as tokens are produced,
        :class:`TokenStep` energies (each one token late, since spilled energy needs the next
        step), and finally the :class:`Verdict`. Closing the generator early stops generation at
        the next token. Arguments as for :meth:`ask`.

        With a ``step`` the stream makes that one attempt live and the caller's policy decides
        (the adapters' engines do). Without one the guard's policy decides: under ``"flag"`` the
        tokens stream live; under ``"retry"`` and ``"abstain"`` text shown could not be taken
        back, so the answer is judged first (:meth:`ask`, retries included) and the decided
        text (the kept answer or the abstention) comes as one delta before the verdict.
        """
        if step is None and not self.policy.streams_live:
            verdict = self.ask(question, raw=raw, localize_in=localize_in, tools=tools, sources=sources, **generation)
            if verdict.text:
                yield verdict.text
            yield verdict
            return
        live, finish = self._start_stream(
            question, raw=raw, localize_in=localize_in, step=step, tools=tools, sources=sources, generation=generation
        )
        try:
            yield from live
        finally:
            live.close()
        assert live.scores is not None
        yield finish(live.scores)

    def check(
        self,
        question: PromptLike,
        answer: str,
        *,
        span: str | tuple[int, int] | None = None,
        raw: bool = False,
        localize_in: str | None = None,
        sources: str | None = None,
    ) -> Verdict:
        """Judge a given answer with one teacher-forced pass (no generation, no retry).

        Args:
            question: the question (chat-templated unless ``raw``).
            answer: the answer text to score.
            span: the exact answer as a substring or ``(start, end)`` characters of ``answer``;
                default: the guard's localizer.
            raw: feed ``question`` as the prompt text as is.
            localize_in, sources: as for :meth:`ask`.
        """
        prompt = self._prompt(question, raw=raw, localize_in=localize_in, sources=sources)
        check_text("answer", answer)
        localizer = self.localizer if span is None else _explicit(span)
        prompt_ids = self._prompts.ids(prompt, RetryStep())
        answer_ids = self._prompts.answer_ids(answer)
        self._check_length(len(prompt_ids), len(answer_ids), "answer")
        scores = score_teacher_forced(
            self.model, torch.tensor(prompt_ids, dtype=torch.long), torch.tensor(answer_ids, dtype=torch.long)
        )
        attempt = self._judge(prompt, scores, "given", localizer, len(prompt_ids))
        if span is None and _too_short_to_judge(attempt):
            attempt = dataclasses.replace(attempt, notes=(*attempt.notes, SHORT_GIVEN_ANSWER))
        return self._verdict(prompt.question, self._single(attempt, RetryStep(), _FLAG))

    # -- async twins ---------------------------------------------------------------------

    async def aask(self, question: PromptLike, **kwargs: Any) -> Verdict:
        """:meth:`ask` in a worker thread; cancelling the task stops generation at the next token."""
        return await self._in_thread(self.ask, question, **kwargs)

    async def acheck(self, question: PromptLike, answer: str, **kwargs: Any) -> Verdict:
        """:meth:`check` in a worker thread."""
        return await self._in_thread(self.check, question, answer, **kwargs)

    async def astream(self, question: PromptLike, **kwargs: Any) -> AsyncIterator[str | TokenStep | Verdict]:
        """:meth:`stream` for async code: each event is awaited from a worker thread.

        The model's asyncio lock is held for the whole stream. Cancelling the consumer (or
        closing the iterator) stops generation at the next token and waits for the worker
        before the lock is released: nothing keeps running on the model afterwards.
        """
        if kwargs.get("step") is None and not self.policy.streams_live:  # judged first, as in stream()
            verdict = await self.aask(question, **kwargs)
            if verdict.text:
                yield verdict.text
            yield verdict
            return
        loop = asyncio.get_running_loop()
        async with async_model_lock(self.model):
            start = functools.partial(self._start_stream, question, **_stream_kwargs(kwargs))
            starting = loop.run_in_executor(None, start)
            try:
                live, finish = await asyncio.shield(starting)
            except BaseException:  # cancelled while starting: stop the generation that may have begun
                await asyncio.wait([starting])
                if not starting.cancelled() and starting.exception() is None:
                    await asyncio.to_thread(starting.result()[0].close)
                raise
            try:
                while True:
                    pending = loop.run_in_executor(None, next, live, None)
                    try:
                        event = await asyncio.shield(pending)
                    except BaseException:
                        live.cancel()
                        await asyncio.wait([pending])
                        raise
                    if event is None:
                        break
                    yield event
            finally:
                live.cancel()
                await asyncio.to_thread(live.close)
            assert live.scores is not None
            scores = live.scores
        yield finish(scores)

    async def _in_thread(self, method: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``method`` in a worker thread under the model's asyncio lock, cancellably."""
        cancel = threading.Event()
        call = functools.partial(method, *args, **kwargs)
        context = contextvars.copy_context()
        context.run(_CANCEL.set, cancel)
        loop = asyncio.get_running_loop()
        async with async_model_lock(self.model):
            pending = loop.run_in_executor(None, context.run, call)
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                cancel.set()
                await asyncio.wait([pending])
                raise

    # -- steps ---------------------------------------------------------------------------

    def _prompt(
        self,
        question: PromptLike,
        *,
        raw: bool = False,
        localize_in: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        sources: str | None = None,
    ) -> Prompt:
        return self._prompts.prompt(question, raw=raw, localize_in=localize_in, tools=tools, sources=sources)

    def _check_length(self, prompt_tokens: int, new_tokens: int, what: str = "max_new_tokens") -> None:
        limit = _context_limit(self.model)
        if limit is not None and prompt_tokens + new_tokens > limit:
            kind, fix = ("new", "lower `max_new_tokens`") if what == "max_new_tokens" else ("answer", "the answer")
            raise ContextLengthError(
                f"prompt of {prompt_tokens} tokens + {new_tokens} {kind} tokens exceeds the model's context of "
                f"{limit} tokens; shorten the question or {fix}"
            )

    def _ask(
        self, prompts: list[Prompt], batch_size: int, generation: Mapping[str, Any], step: RetryStep | None
    ) -> list[Verdict]:
        """Run the attempt loop for every prompt, in lock-step batches (or make one given ``step``)."""
        options = check_generation(generation)
        if step is not None:
            if not isinstance(step, RetryStep):
                raise InvalidInputError(f"`step` must be a guardrail.RetryStep, got {type(step).__name__}: {step!r}")
            attempts = self._generate(prompts, [step] * len(prompts), options, batch_size)
            return [
                self._verdict(p.question, self._single(a, step, _FLAG)) for p, a in zip(prompts, attempts, strict=True)
            ]
        loops: list[AttemptLoop[Attempt]] = [AttemptLoop(self.policy) for _ in prompts]
        while todo := [(i, s) for i, loop in enumerate(loops) if (s := loop.next_step()) is not None]:
            indices = [i for i, _ in todo]
            steps = [s for _, s in todo]
            found = self._generate([prompts[i] for i in indices], steps, options, batch_size)
            for i, s, attempt in zip(indices, steps, found, strict=True):
                loops[i].record(self._judged(attempt, s))
        return [self._verdict(p.question, loop.decide()) for p, loop in zip(prompts, loops, strict=True)]

    def _generate(
        self, prompts: list[Prompt], steps: list[RetryStep], options: Mapping[str, Any], batch_size: int
    ) -> list[Attempt]:
        """One attempt per prompt; all ``steps`` share an attempt number (so one decoding)."""
        kwargs, seed = self._generation_kwargs(options, steps[0])
        label = steps[0].label(options)
        ids = [self._prompts.ids(p, s) for p, s in zip(prompts, steps, strict=True)]
        found: dict[int, Attempt] = {}
        for chunk in _chunks(ids, batch_size, pad=honours_left_padding(self.model)):
            input_ids, mask = self._batch([ids[i] for i in chunk], int(kwargs["max_new_tokens"]))
            with _seeded(seed, model_device(self.model)):
                rows, _ = generate_with_scores(
                    self.model, input_ids, mask, eos_token_ids=self._eos, pad_token_id=self._pad,
                    stop=_CANCEL.get(), **kwargs,
                )  # fmt: skip
            for i, scores in zip(chunk, rows, strict=True):
                found[i] = self._judge(prompts[i], scores, label, self.localizer, len(ids[i]))
        return [found[i] for i in range(len(prompts))]

    def _start_stream(
        self,
        question: PromptLike,
        *,
        raw: bool = False,
        localize_in: str | None = None,
        step: RetryStep | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        sources: str | None = None,
        generation: Mapping[str, Any] | None = None,
    ) -> tuple[LiveGeneration, Callable[[TokenScores], Verdict]]:
        """Start one streamed attempt; return it and the function that judges its scores."""
        prompt = self._prompt(question, raw=raw, localize_in=localize_in, tools=tools, sources=sources)
        options = check_generation(generation or {})
        attempt_step = step if step is not None else RetryStep()
        kwargs, seed = self._generation_kwargs(options, attempt_step)
        ids = self._prompts.ids(prompt, attempt_step)
        input_ids, mask = self._batch([ids], int(kwargs["max_new_tokens"]))

        def generate(**streaming: Any) -> TokenScores:
            with _seeded(seed, model_device(self.model)):
                rows, _ = generate_with_scores(
                    self.model, input_ids, mask, eos_token_ids=self._eos, pad_token_id=self._pad,
                    **streaming, **kwargs,
                )  # fmt: skip
            return rows[0]

        def finish(scores: TokenScores) -> Verdict:
            attempt = self._judge(prompt, scores, attempt_step.label(options), self.localizer, len(ids))
            policy = _FLAG if step is not None else self.policy
            return self._verdict(prompt.question, self._single(attempt, attempt_step, policy))

        return LiveGeneration(generate, self.tokenizer, self._eos), finish

    def _generation_kwargs(self, options: Mapping[str, Any], step: RetryStep) -> tuple[dict[str, Any], int | None]:
        """``generate`` kwargs of an attempt, and its seed (the step's for a retry)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False, **options}
        seed = kwargs.pop("seed", None)
        if step.is_retry:
            kwargs.update(step.generate_kwargs())
            seed = step.seed
        strings = kwargs.pop("stop_strings", None)
        if strings:
            kwargs["stopping_criteria"] = [stop_string_criteria(self.tokenizer, strings)]
        return kwargs, seed

    def _batch(self, ids: list[list[int]], max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(input_ids, attention_mask)`` on the model's device (the tokenizer is not used)."""
        width = max(len(row) for row in ids)
        self._check_length(width, max_new_tokens)
        input_ids = torch.full((len(ids), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, tokens in enumerate(ids):
            input_ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            mask[row, width - len(tokens) :] = 1
        device = model_device(self.model)
        return input_ids.to(device), mask.to(device)

    def _judge(
        self, prompt: Prompt, scores: TokenScores, decoding: str, localizer: Localizer, prompt_tokens: int
    ) -> Attempt:
        answer, offsets = token_offsets(lambda ids: self.tokenizer.decode(ids), scores.token_ids.tolist())
        tokens = tuple(answer[a:b] for a, b in offsets)
        if not answer.strip():
            empty = Span(0, 0, 0, 0, "", "empty answer: cannot be scored")
            return Attempt(answer, tokens, scores, empty, float("inf"), decoding, prompt_tokens)
        span = localizer.locate(prompt.question, answer, offsets)
        sources = None
        if self.calibration.grounded:
            sources = prompt.sources if prompt.sources is not None else prompt_sources(prompt.messages or prompt.text)
        score = self.calibration.score(scores, span, sources)
        note = None if sources is None else span_grounding(span, sources)[1]
        notes = () if note is None else (note,)
        return Attempt(answer, tokens, scores, span, score, decoding, prompt_tokens, notes)

    def _judged(self, attempt: Attempt, step: RetryStep) -> Judged[Attempt]:
        return Judged(attempt, attempt.answer, attempt.score, self.calibration.threshold, step)

    def _single(self, attempt: Attempt, step: RetryStep, policy: Policy) -> Decision[Attempt]:
        """The decision about one attempt under ``policy``."""
        loop: AttemptLoop[Attempt] = AttemptLoop(policy, first=step.attempt)
        loop.record(self._judged(attempt, step))
        return loop.decide()

    def _verdict(self, question: str, decision: Decision[Attempt]) -> Verdict:
        return Verdict(
            question=question,
            text=decision.text,
            action=decision.action,
            threshold=self.calibration.threshold,
            attempts=tuple(j.result for j in decision.attempts),
            chosen=decision.chosen,
            calibration=self.calibration.describe(),
        )

    def _complete(self, instruction: str) -> str:
        """Greedy short completion of a chat message (used by the LLM-extraction localizer)."""
        ids = self._prompts.ids(self._prompt(instruction), RetryStep())
        input_ids, mask = self._batch([ids], 24)
        try:
            criteria = [stop_string_criteria(self.tokenizer, ["\n"])]
        except InvalidInputError:  # the extraction keeps the first line anyway
            criteria = []
        with model_lock(self.model), torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                pad_token_id=self._pad, stopping_criteria=criteria,
            )  # fmt: skip
        return str(self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))


_CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("spillguard_cancel", default=None)
"""Set by the async twins in their worker's context: generation stops at the next token once set."""


def _stream_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Split :meth:`Guard.astream` keyword arguments like :meth:`Guard.stream` does."""
    named: dict[str, Any] = {
        k: kwargs.pop(k) for k in ("raw", "localize_in", "step", "tools", "sources") if k in kwargs
    }
    return {**named, "generation": kwargs}


def _chunks(ids: list[list[int]], size: int, *, pad: bool) -> list[list[int]]:
    """Indices of ``ids`` in batches of at most ``size``; without left padding (``pad=False``),
    each batch holds prompts of one length only."""
    if pad:
        return [list(range(start, min(start + size, len(ids)))) for start in range(0, len(ids), size)]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        by_length.setdefault(len(row), []).append(i)
    return [group[start : start + size] for group in by_length.values() for start in range(0, len(group), size)]


def _explicit(span: object) -> Localizer:
    if isinstance(span, str):
        return ExplicitSpan(substring=span)
    if isinstance(span, tuple) and len(span) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in span):
        return ExplicitSpan(chars=(span[0], span[1]))
    raise InvalidInputError(f"`span` must be a substring of the answer or (start, end) ints, got {span!r}")


SHORT_GIVEN_ANSWER = (
    "span too short to judge: the given answer is scored only on its first few tokens, whose energies the "
    "position right after the prompt dominates (on one-word given capitals the paper's score has AUROC 0.36, "
    "mean token log-prob 0.84); give the answer as the sentence the model would write, with `span=` "
    "naming the fact, e.g. check(question, 'The capital of Australia is Canberra.', span='Canberra')"
)
"""The note on a :meth:`Guard.check` verdict whose span is the given answer's first few tokens."""

_SHORT_SPAN_TOKENS = 4


def _too_short_to_judge(attempt: Attempt) -> bool:
    """Whether a given answer's scored span starts at its first token and is at most a few tokens."""
    span = attempt.span
    return (
        span.start == 0
        and 0 < span.stop - span.start <= _SHORT_SPAN_TOKENS
        and len(attempt.tokens) <= 2 * _SHORT_SPAN_TOKENS
    )


_ENCODER_FAMILIES = frozenset(
    {
        "bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "electra", "ernie", "megatron-bert",
        "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer", "xlm-roberta", "xlm-roberta-xl", "xmod",
    }
)  # fmt: skip
"""Encoder families that transformers also builds as causal LMs; causal only with ``is_decoder=True``."""

_NON_CAUSAL_FAMILIES = {
    "xlnet": "a permutation language model whose plain forward lets every position attend to the tokens after it",
    "cpmant": "its forward marks every position as context, so every position attends to the tokens after it",
    "xlm": "built with causal=False (its default), every position attends to the tokens after it",
}
"""Families transformers builds as causal LMs whose plain forward pass is not causal (``xlm``: unless
``config.causal``): their logits are not next-token predictions of the text so far."""


def _check_model(model: Any, tokenizer: Any) -> int:
    """Validate the pair; return the model's vocabulary size (LM-head rows)."""
    if not callable(getattr(model, "generate", None)) or not callable(getattr(model, "get_output_embeddings", None)):
        raise ModelError(f"`model` must be a Hugging Face causal LM with `generate`, got {type(model).__name__}")
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise ModelError(
            f"`model` ({type(model).__name__}) is an encoder-decoder; spillguard scores decoder-only causal LMs "
            "(AutoModelForCausalLM), whose every forward step reads the tokens it emitted"
        )
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in _ENCODER_FAMILIES and not getattr(config, "is_decoder", False):
        raise ModelError(
            f"`model` ({type(model).__name__}) is a bidirectional encoder ({model_type!r}) loaded with "
            "is_decoder=False: every position sees the tokens after it, so its logits are not next-token "
            "predictions; load it with `is_decoder=True` or use a decoder-only causal LM"
        )
    if model_type in _NON_CAUSAL_FAMILIES and not (model_type == "xlm" and getattr(config, "causal", False) is True):
        raise ModelError(
            f"`model` ({type(model).__name__}, {model_type!r}) is not causal: {_NON_CAUSAL_FAMILIES[model_type]}; "
            "a teacher-forced score would read the answer's later tokens (use a decoder-only causal LM"
            + (", or build XLM with causal=True" if model_type == "xlm" else "")
            + ")"
        )
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ModelError(
            f"`model` ({type(model).__name__}) has no LM head, so no logits to score; load it with AutoModelForCausalLM"
        )
    modules = model.named_modules() if callable(getattr(model, "named_modules", None)) else [("", model)]
    training = [name or "(the model)" for name, m in modules if getattr(m, "training", False)]
    if training:
        raise ModelError(
            f"`model` ({type(model).__name__}) is in training mode ({len(training)} modules, e.g. {training[0]!r}): "
            "dropout would make every score random; call model.eval() first (the guard never changes the model)"
        )
    check_generate(model)
    if not callable(getattr(tokenizer, "get_vocab", None)) or not callable(tokenizer):
        raise ModelError(f"`tokenizer` must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    vocab_size = int(head.weight.shape[0])
    if len(tokenizer) > vocab_size:
        raise ModelError(
            f"tokenizer has {len(tokenizer)} tokens but the model's LM head has {vocab_size} rows; "
            "they do not belong together"
        )
    return vocab_size


_CONTEXT_KEYS = ("max_position_embeddings", "max_seq_len", "n_positions", "max_sequence_length", "seq_length")


def _context_limit(model: Any) -> int | None:
    """The model's context window, wherever its config keeps it: the text config of a
    multimodal wrapper (Gemma-3 and larger keep it in ``text_config``) first, then the config
    itself; ``max_seq_len`` (MPT), ``n_positions`` (GPT-2), ... for older families."""
    config: Any = getattr(model, "config", None)
    text = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else None
    for part in (text, getattr(config, "text_config", None), config):
        for key in _CONTEXT_KEYS:
            value = getattr(part, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


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
