"""A tiny real Hugging Face model that writes a scripted reply, for tool-calling plumbing tests.

A random-weight tiny model never writes a parseable tool call, and the bundled SmolLM2 template
renders no tools. This builds a 2-layer Llama (random attention and MLP weights whose outputs are
zeroed, so the residual stream is the token embedding) whose LM head maps each token to its
successor in a script: greedy decoding follows the script exactly, and the guard scores real
raw logits. The chat template renders tools, tool calls and tool results, and ends with a
generation prompt that depends on the conversation (``answer:`` after a tool result, else
``assistant:``), so a reply can depend on the turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

import torch

from guardrail import Calibration, Guard, Policy

TOOL_TEMPLATE = (
    "{% if tools %}tools : {% for t in tools %}{{ t['function']['name'] }} {% endfor %}<eos> {% endif %}"
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}call {{ c['function']['name'] }} {% endfor %}"
    "{% else %}{{ m['content'] }}{% endif %} <eos> {% endfor %}"
    "{% if add_generation_prompt %}{% if messages[-1]['role'] == 'tool' %}answer: {% else %}assistant: {% endif %}"
    "{% endif %}"
)
PROMPT_WORDS = (
    "<pad> <eos> <unk> what is the capital of france ? . , weather in paris user: assistant: answer: "
    "system: tool: tools : call"
).split()
WEATHER_CALL = '<tool_call> {"name": "get_weather", "arguments": {"city": "Paris"}} </tool_call>'


def scripted_guard(
    replies: Mapping[str, str],
    *,
    template: str = TOOL_TEMPLATE,
    threshold: float | None = None,
    policy: Policy | None = None,
    cycle: bool = False,
    max_new_tokens: int = 16,
) -> Guard:
    """A guard whose model answers ``replies[last prompt word]`` (words split on spaces).

    Args:
        replies: the generation-prompt word (``"assistant:"``, ``"answer:"``) -> reply text.
        template: the chat template.
        threshold: an uncalibrated threshold (``-1e9`` flags everything, ``1e9`` allows all).
        policy: the guard's policy.
        cycle: repeat each reply forever (no EOS): generation runs to ``max_new_tokens``.
        max_new_tokens: the guard's answer length limit.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = list(PROMPT_WORDS)
    for reply in replies.values():
        words += [w for w in reply.split() if w not in words]
    index = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=index, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = template

    hidden = -(-len(words) // 4) * 4  # two heads of an even size
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words), hidden_size=hidden, intermediate_size=8, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    successor = dict.fromkeys(range(len(words)), index["<eos>"])
    for start, reply in replies.items():
        chain = [index[start], *(index[w] for w in reply.split())]
        successor.update(pairwise(chain))
        if cycle:
            successor[chain[-1]] = chain[1]
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(len(words), hidden))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(len(words), hidden)
        for token, following in successor.items():
            head[following, token] = 2.0
        model.lm_head.weight.copy_(head)
    calibration = Calibration.uncalibrated() if threshold is None else Calibration.uncalibrated(threshold)
    return Guard(model, tokenizer, max_new_tokens=max_new_tokens, calibration=calibration, policy=policy)
