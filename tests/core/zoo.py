"""Tiny random-weight models of many architectures, built in memory from configs (no download).

Each family is a few thousand parameters (hidden size 16, two layers) over the word-level test
vocabulary of :mod:`tests.conftest`, so that the whole model matrix runs in seconds. The same
builders serve the tolerance measurements of :mod:`tests.core.measure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers as hf

from tests.conftest import CHAT_TEMPLATE, TINY_WORDS

VOCAB = len(TINY_WORDS)
PAD, EOS = 0, 1
_IDS = dict(vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None)
_ATTENTION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=256,
)


@dataclass(frozen=True)
class Family:
    """One architecture: how to build it, and what the guard must do with it.

    Attributes:
        config: builds the config.
        model: the causal-LM class.
        pads_left: whether its forward pass honours left padding (else the guard batches only
            prompts of one length, see ``guardrail.capture.NO_LEFT_PADDING``).
        pad_token: whether its tokenizer has a pad token (GPT-2's has none).
    """

    config: Callable[[], Any]
    model: type
    pads_left: bool = True
    pad_token: bool = True


def _gemma3_multimodal() -> Any:
    text = hf.Gemma3TextConfig(**_IDS, **_ATTENTION, head_dim=8, sliding_window=4, final_logit_softcapping=5.0)
    vision = hf.SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    return hf.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=2, boi_token_index=2
    )


_MAMBA = dict(hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=2)

FAMILIES: dict[str, Family] = {
    "llama": Family(lambda: hf.LlamaConfig(**_IDS, **_ATTENTION), hf.LlamaForCausalLM),
    "mistral": Family(lambda: hf.MistralConfig(**_IDS, **_ATTENTION, sliding_window=4), hf.MistralForCausalLM),
    "qwen2": Family(lambda: hf.Qwen2Config(**_IDS, **_ATTENTION), hf.Qwen2ForCausalLM),
    "qwen3": Family(lambda: hf.Qwen3Config(**_IDS, **_ATTENTION, head_dim=8), hf.Qwen3ForCausalLM),
    "qwen3_moe": Family(
        lambda: hf.Qwen3MoeConfig(
            **_IDS, **_ATTENTION, head_dim=8, num_experts=2, num_experts_per_tok=1, moe_intermediate_size=16
        ),
        hf.Qwen3MoeForCausalLM,
    ),
    "gemma2": Family(
        lambda: hf.Gemma2Config(
            **_IDS, **_ATTENTION, head_dim=8, sliding_window=4, final_logit_softcapping=5.0, attn_logit_softcapping=3.0
        ),
        hf.Gemma2ForCausalLM,
    ),
    "gemma3_text": Family(
        lambda: hf.Gemma3TextConfig(**_IDS, **_ATTENTION, head_dim=8, sliding_window=4, final_logit_softcapping=5.0),
        hf.Gemma3ForCausalLM,
    ),
    "gemma3_multimodal": Family(_gemma3_multimodal, hf.Gemma3ForConditionalGeneration),
    "phi3": Family(lambda: hf.Phi3Config(**_IDS, **_ATTENTION), hf.Phi3ForCausalLM),
    "gpt2": Family(
        lambda: hf.GPT2Config(**_IDS, n_embd=16, n_layer=2, n_head=2, n_positions=256),
        hf.GPT2LMHeadModel,
        pad_token=False,
    ),
    "gpt_neox": Family(
        lambda: hf.GPTNeoXConfig(
            **_IDS,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=256,
        ),
        hf.GPTNeoXForCausalLM,
    ),
    "opt": Family(
        lambda: hf.OPTConfig(
            **_IDS,
            hidden_size=16,
            ffn_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=256,
            word_embed_proj_dim=16,
        ),
        hf.OPTForCausalLM,
    ),
    "falcon": Family(
        lambda: hf.FalconConfig(**_IDS, hidden_size=16, num_hidden_layers=2, num_attention_heads=2),
        hf.FalconForCausalLM,
    ),
    "granite": Family(lambda: hf.GraniteConfig(**_IDS, **_ATTENTION, logits_scaling=2.0), hf.GraniteForCausalLM),
    "cohere": Family(lambda: hf.CohereConfig(**_IDS, **_ATTENTION, logit_scale=0.5), hf.CohereForCausalLM),
    "mixtral": Family(
        lambda: hf.MixtralConfig(**_IDS, **_ATTENTION, num_local_experts=2, num_experts_per_tok=1),
        hf.MixtralForCausalLM,
    ),
    "mpt": Family(
        lambda: hf.MptConfig(**_IDS, d_model=16, n_heads=2, n_layers=2, max_seq_len=256, expansion_ratio=2),
        hf.MptForCausalLM,
    ),
    # recurrent and hybrid families
    "mamba": Family(lambda: hf.MambaConfig(**_IDS, **_MAMBA), hf.MambaForCausalLM),
    "falcon_mamba": Family(lambda: hf.FalconMambaConfig(**_IDS, **_MAMBA), hf.FalconMambaForCausalLM),
    "mamba2": Family(
        lambda: hf.Mamba2Config(**_IDS, **_MAMBA, num_heads=4, head_dim=8, n_groups=1, chunk_size=8),
        hf.Mamba2ForCausalLM,
    ),
    "rwkv": Family(
        lambda: hf.RwkvConfig(
            **_IDS, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16, intermediate_size=32
        ),
        hf.RwkvForCausalLM,
        pads_left=False,
    ),
    "recurrent_gemma": Family(
        lambda: hf.RecurrentGemmaConfig(
            **_IDS,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            lru_width=16,
            attention_window_size=4,
            conv1d_width=2,
            block_types=["recurrent", "attention"],
        ),
        hf.RecurrentGemmaForCausalLM,
    ),
    "jamba": Family(
        lambda: hf.JambaConfig(
            **_IDS,
            **_ATTENTION,
            mamba_d_state=4,
            mamba_d_conv=2,
            mamba_expand=2,
            mamba_dt_rank=4,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=2,
            num_experts_per_tok=1,
            use_mamba_kernels=False,
        ),
        hf.JambaForCausalLM,
    ),
}


def build(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """The tiny model of family ``name``, random weights from ``seed``, eval mode."""
    family = FAMILIES[name]
    torch.manual_seed(seed)
    model = family.model(family.config()).to(dtype).eval()
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD if family.pad_token else None
    return model


def word_tokenizer(*, pad: bool = True, bos: bool = False) -> Any:
    """The word-level test tokenizer with the test chat template; without a pad token (GPT-2
    style) when ``pad`` is false; adding ``<bos>`` (a new last id) to every text when ``bos``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = [*TINY_WORDS, "<bos>"] if bos else list(TINY_WORDS)
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special: dict[str, str] = {"eos_token": "<eos>", "unk_token": "<unk>"}
    if pad:
        special["pad_token"] = "<pad>"
    if bos:
        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
        )
        special["bos_token"] = "<bos>"
    tokenizer = hf.PreTrainedTokenizerFast(tokenizer_object=core, **special)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


_BPE_CORPUS = (
    "what is the capital of france ? the capital of france is paris .",
    "rome is a city . berlin is a city and a country ?",
    "i don't know . yes , no . an answer",
)


def byte_level_tokenizer() -> Any:
    """A GPT-2-style byte-level BPE tokenizer trained in memory: 300 tokens, no pad token, no
    chat template, ``<|endoftext|>`` as EOS (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(_BPE_CORPUS) * 3, trainer)
    return hf.PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_gpt2(vocab_size: int, *, seed: int = 0, eos: int = 0) -> Any:
    """A tiny GPT-2 for ``vocab_size`` tokens with EOS ``eos`` and no pad token."""
    torch.manual_seed(seed)
    config = hf.GPT2Config(
        vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=256, eos_token_id=eos, bos_token_id=eos
    )
    model = hf.GPT2LMHeadModel(config).eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = None
    return model
