"""IGD with a semantic-ID catalog (TIGER style): items are code tuples, one added token per code.

Each item is a tuple of codes, one from each of ``C`` codebooks of ``K`` codes (for example from
an RQ-VAE over item embeddings); code ``j`` of codebook ``i`` is the added token ``<{letter}_{j}>``
(``<a_3><b_5><c_1>``). The item's token path is its code tokens followed by EOS, so the IGD trie
over code paths is the semantic-ID prefix tree: a code that no sibling shares a prefix with has
zero information gain, and IGD down-weights it in the loss (``beta``) and IGD decoding prefers
informative codes (``alpha``).

The script builds a synthetic catalog and users whose next item follows the last one, adds the
code tokens to a tokenizer and resizes the model's embeddings, builds the trie with
``ItemTrie.from_token_ids``, fine-tunes with ``IGDTrainer`` and recommends with
``igdbeam.generate``. With no ``--model`` it uses a tiny random Llama and a tokenizer trained on
the spot (nothing is downloaded; about a minute on 2 CPU cores); ``--model PATH`` fine-tunes a
local causal-LM checkpoint instead (add ``--lora`` to train a LoRA adapter plus the new token
embeddings).

    python examples/semantic_ids.py --steps 200
    python examples/semantic_ids.py --model path/to/SmolLM2-135M-Instruct --lora --steps 100
"""

from __future__ import annotations

import argparse
import random
import re
import string
from collections.abc import Sequence
from typing import Any

import torch
import transformers

import igdbeam
from igdbeam import CompletionCollator, IGDTrainer, ItemTrie, popularity_weights

PROMPT_HEAD = "Recommend the next item. History:"
PROMPT_TAIL = " Next:"
_CODE_TOKEN = re.compile(r"^<([a-z])_(\d+)>$")


def code_token(codebook: int, code: int) -> str:
    """The added token of ``code`` in codebook ``codebook`` (0 -> ``a``): ``<a_3>``."""
    if not 0 <= codebook < 26:
        raise ValueError(f"codebook must be in [0, 26), got {codebook}")
    return f"<{string.ascii_lowercase[codebook]}_{code}>"


def semantic_id_tokens(num_codebooks: int, codebook_size: int) -> list[str]:
    """Every code token, codebook by codebook: ``<a_0> .. <a_{K-1}>, <b_0>, ...``."""
    return [code_token(c, j) for c in range(num_codebooks) for j in range(codebook_size)]


def semantic_id_string(codes: Sequence[int]) -> str:
    """The text of one item's semantic ID: ``<a_3><b_5><c_1>``."""
    return "".join(code_token(c, j) for c, j in enumerate(codes))


def random_codes(
    num_items: int, num_codebooks: int, codebook_size: int, seed: int = 0
) -> list[tuple[int, ...]]:
    """Distinct random code tuples, with shared prefixes (clustered like RQ-VAE codes)."""
    if num_items > codebook_size**num_codebooks:
        raise ValueError(f"{num_items} items do not fit in {codebook_size}^{num_codebooks} codes")
    rng = random.Random(seed)
    # Few first-level clusters, so that prefixes are shared and some codes carry no information.
    heads = rng.sample(range(codebook_size), max(1, codebook_size // 2))
    codes: set[tuple[int, ...]] = set()
    while len(codes) < num_items:
        clustered = len(codes) < num_items * 3 // 4
        first = rng.choice(heads) if clustered else rng.randrange(codebook_size)
        rest = tuple(rng.randrange(codebook_size) for _ in range(num_codebooks - 1))
        codes.add((first, *rest))
    return sorted(codes)


def add_semantic_id_tokens(
    tokenizer: Any, model: Any, num_codebooks: int, codebook_size: int
) -> dict[str, int]:
    """Add the code tokens to ``tokenizer``, resize ``model``'s embeddings; return token -> id."""
    tokens = semantic_id_tokens(num_codebooks, codebook_size)
    tokenizer.add_tokens(tokens)
    if model is not None:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    return dict(zip(tokens, ids, strict=True))


def item_token_paths(codes: Sequence[Sequence[int]], tokenizer: Any) -> list[list[int]]:
    """Each item's token path: its code tokens (one token per code) then EOS."""
    paths = []
    for item, c in enumerate(codes):
        ids = tokenizer(semantic_id_string(c), add_special_tokens=False).input_ids
        if len(ids) != len(c):
            sid = semantic_id_string(c)
            raise ValueError(f"item {item}: {sid} is {len(ids)} tokens, not {len(c)}")
        paths.append([*ids, tokenizer.eos_token_id])
    return paths


def codes_of_tokens(token_ids: Sequence[int], tokenizer: Any) -> tuple[int, ...]:
    """The code tuple of a decoded token path (EOS and padding after the codes are dropped)."""
    codes = []
    for tok in tokenizer.convert_ids_to_tokens([int(t) for t in token_ids]):
        m = _CODE_TOKEN.match(tok or "")
        if m is None:
            break
        if string.ascii_lowercase.index(m.group(1)) != len(codes):
            raise ValueError(f"code token {tok} out of order in {token_ids}")
        codes.append(int(m.group(2)))
    return tuple(codes)


def make_rows(
    codes: Sequence[Sequence[int]],
    tokenizer: Any,
    num_rows: int,
    history: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Synthetic users: random histories whose next item is the successor of the last one."""
    rng = random.Random(seed)
    n = len(codes)
    successor = list(range(n))
    rng.shuffle(successor)
    paths = item_token_paths(codes, tokenizer)
    rows = []
    for _ in range(num_rows):
        seen = [rng.randrange(n) for _ in range(history)]
        target = successor[seen[-1]]
        text = PROMPT_HEAD + "".join(" " + semantic_id_string(codes[i]) for i in seen) + PROMPT_TAIL
        rows.append(
            {
                "prompt_ids": tokenizer(text, add_special_tokens=False).input_ids,
                "completion_ids": paths[target],
                "target": target,
            }
        )
    return rows


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained on the prompt text (pad 0, eos 1); no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([PROMPT_HEAD + PROMPT_TAIL] * 4, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>"
    )


def tiny_llama(vocab_size: int, tokenizer: Any, seed: int = 0) -> Any:
    """A random 2-layer Llama (hidden 64) for the tiny tokenizer."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    return transformers.LlamaForCausalLM(config)


def train(
    model: Any,
    rows: list[dict[str, Any]],
    trie: ItemTrie,
    pad_token_id: int,
    *,
    steps: int,
    beta: float = 0.1,
    batch_size: int = 8,
    learning_rate: float = 3e-3,
    output_dir: str = "semantic-ids-out",
    seed: int = 0,
) -> IGDTrainer:
    """Fine-tune with the IGD loss (``IGDTrainer``); returns the trainer after ``steps`` steps."""
    args = transformers.TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=seed,
    )
    features = [{k: r[k] for k in ("prompt_ids", "completion_ids")} for r in rows]
    trainer = IGDTrainer(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=CompletionCollator(pad_token_id),
        trie=trie,
        beta=beta,
    )
    trainer.train()
    return trainer


def recommend(
    model: Any,
    rows: list[dict[str, Any]],
    trie: ItemTrie,
    pad_token_id: int,
    *,
    num_beams: int = 5,
    alpha: float = 0.2,
) -> igdbeam.RecommendationOutput:
    """Top-``num_beams`` items per row by IGD beam search over the semantic-ID trie."""
    width = max(len(r["prompt_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):  # left padding
        ids[i, width - len(r["prompt_ids"]) :] = torch.tensor(r["prompt_ids"])
        mask[i, width - len(r["prompt_ids"]) :] = 1
    device = next(model.parameters()).device
    model.eval()
    return igdbeam.generate(
        model,
        ids.to(device),
        mask.to(device),
        trie=trie.to(device),
        num_beams=num_beams,
        alpha=alpha,
        length_penalty=0.0,
        pad_token_id=pad_token_id,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the example; returns the metrics it prints."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=48, help="catalog size")
    p.add_argument("--codebooks", type=int, default=3, help="codes per item")
    p.add_argument("--codebook-size", type=int, default=8, help="codes per codebook")
    p.add_argument("--rows", type=int, default=256, help="synthetic training rows")
    p.add_argument("--steps", type=int, default=200, help="training steps")
    p.add_argument("--beta", type=float, default=0.1, help="IGD loss weight of zero-IG tokens")
    p.add_argument("--alpha", type=float, default=0.2, help="IGD decoding strength")
    p.add_argument("--beams", type=int, default=5, help="beams = items recommended per row")
    p.add_argument("--model", default=None, help="local causal-LM checkpoint (default: tiny)")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter (needs peft)")
    p.add_argument("--out", default="semantic-ids-out", help="trainer output folder")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    if a.model is None:
        tokenizer = tiny_tokenizer()
        model = None
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(a.model)
        model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    token_ids = add_semantic_id_tokens(tokenizer, model, a.codebooks, a.codebook_size)
    if model is None:
        model = tiny_llama(len(tokenizer), tokenizer, a.seed)
    if a.lora:
        import peft

        # The new code tokens need trained embeddings: train their rows alongside the adapter.
        config = igdbeam.lora_config(
            r=8, trainable_token_indices={"embed_tokens": sorted(token_ids.values())}
        )
        model = peft.get_peft_model(model, config)

    codes = random_codes(a.items, a.codebooks, a.codebook_size, a.seed)
    rows = make_rows(codes, tokenizer, a.rows, seed=a.seed)
    weights = popularity_weights([r["target"] for r in rows], len(codes), smoothing=1.0)
    paths = item_token_paths(codes, tokenizer)
    trie = ItemTrie.from_token_ids(paths, weights=weights, vocab_size=len(tokenizer))
    stats = trie.stats()
    print(
        f"catalog: {len(codes)} items x {a.codebooks} codes, {trie.num_nodes} trie nodes, "
        f"zero-IG tokens {stats['zero_ig_token_share']:.1%} (popularity-weighted)"
    )

    train(model, rows, trie, tokenizer.pad_token_id, steps=a.steps, beta=a.beta, output_dir=a.out)
    test_rows = rows[: min(64, len(rows))]
    rec = recommend(
        model, test_rows, trie, tokenizer.pad_token_id, num_beams=a.beams, alpha=a.alpha
    )
    hits = [r["target"] in rec.item_ids[i].tolist() for i, r in enumerate(test_rows)]
    metrics = {f"HR@{a.beams}": sum(hits) / len(hits)}
    first = rec.sequences[0, 0, : int(rec.lengths[0, 0])].tolist()
    target = semantic_id_string(codes[test_rows[0]["target"]])
    top = int(rec.item_ids[0, 0])
    print(
        f"row 0: target {target}, top item {top} = {tokenizer.decode(first)!r} "
        f"-> codes {codes_of_tokens(first, tokenizer)}"
    )
    print(f"HR@{a.beams} on {len(test_rows)} training rows: {metrics[f'HR@{a.beams}']:.3f}")
    return metrics


if __name__ == "__main__":
    main()
