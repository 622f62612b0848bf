"""IGD beam search on vLLM vs vLLM's own ``LLM.beam_search`` vs ``igdbeam.generate``.

Run in the vLLM environment (``tools/ci_vllm.sh`` builds it)::

    VLLM_CPU_KVCACHE_SPACE=2 /work/venvs/vllm/bin/python benchmarks/bench_vllm.py \
        --rows 16 --beams 10 [--compiled] [--json out.json]

Same ML-100k test prompts, same beams, SmolLM2-135M in float32 on one engine:

* ``igdbeam.vllm`` — :func:`igdbeam.vllm.generate` (IGD, alpha 0.2, trie-constrained, stops when
  no beam can change the top K);
* ``vllm.beam_search`` — vLLM's ``LLM.beam_search`` with the same beam width, unconstrained,
  for ``max_tokens`` = the trie's depth (what a title search must allow) and = 13 (the mean
  title length, the issue's setting);
* ``igdbeam.generate`` — the transformers model with igdbeam's shared-prefix KV cache.

Every round decodes fresh prompts (rows ``r*N .. (r+1)*N-1``) on every side, so no round is
served from the prefix cache of an earlier one.

The items of ``igdbeam.vllm`` are checked against ``igdbeam.generate`` before any timing. Each
side runs ``--rounds`` times, alternating; the table gives the mean and the best round and the
ratios. Under pytest (``pytest benchmarks``) the module is skipped unless vLLM is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __name__ not in ("__main__", "__mp_main__"):  # collected by pytest (vLLM's spawned engine
    # processes import this file as __mp_main__ and must not skip)
    import pytest

    pytest.importorskip("vllm.entrypoints.llm")
    pytest.skip("run as a script: python benchmarks/bench_vllm.py", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vllm"))


def _time(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class _EngineWork:
    """Counts the requests an ``LLM`` answers and the prompt tokens it computes or finds in its
    prefix cache (``RequestOutput.num_cached_tokens``), by wrapping ``llm.generate``."""

    def __init__(self, llm: Any) -> None:
        self.llm, self.original = llm, llm.generate
        self.requests = self.computed = self.cached = 0

        def counting(prompts: Any, params: Any, **kwargs: Any) -> Any:
            outputs = self.original(prompts, params, **kwargs)
            for out in outputs:
                cached = int(getattr(out, "num_cached_tokens", 0) or 0)
                self.requests += 1
                self.cached += cached
                self.computed += len(out.prompt_token_ids) - cached
            return outputs

        llm.generate = counting

    def restore(self) -> None:
        """Put the engine's own ``generate`` back."""
        self.llm.generate = self.original


def main() -> None:
    """Parse the options, check the items, time the three sides, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compiled", action="store_true", help="vLLM with torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (transformers)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    import torch
    from transformers import AutoModelForCausalLM
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import BeamSearchParams
    from vllm_testing import compare, engine_kwargs, movielens_setup

    import igdbeam
    import igdbeam.vllm
    from igdbeam.app.pipeline import left_pad
    from vllm import LLM

    if args.threads:
        torch.set_num_threads(args.threads)
    # Fresh prompts every round (round r decodes rows r*N..(r+1)*N-1, round 0 the check): a
    # round never meets the prefix cache of an earlier one, for every side alike.
    setup = movielens_setup(args.rows * (args.rounds + 1))
    pad = setup.tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_pretrained(setup.model_path, dtype=torch.float32).eval()
    batches = [setup.prompts[r * args.rows : (r + 1) * args.rows] for r in range(args.rounds + 1)]
    kw = engine_kwargs()
    kw["enforce_eager"] = not args.compiled
    t_init, llm = _time(lambda: LLM(model=setup.model_path, **kw))
    compact = igdbeam.vllm.compact_trie(setup.trie)

    def ours(r: int) -> Any:
        return igdbeam.vllm.generate(
            llm,
            batches[r],
            trie=compact,
            num_beams=args.beams,
            alpha=args.alpha,
            pad_token_id=pad,
        )

    def reference(r: int) -> Any:
        ids, mask = left_pad(batches[r], pad)
        return igdbeam.generate(
            model,
            ids,
            mask,
            trie=setup.trie,
            num_beams=args.beams,
            alpha=args.alpha,
            pad_token_id=pad,
        )

    def vllm_beams(r: int, max_tokens: int) -> Any:
        params = BeamSearchParams(beam_width=args.beams, max_tokens=max_tokens)
        return llm.beam_search([TokensPrompt(prompt_token_ids=p) for p in batches[r]], params)

    # Correctness first (this also warms every side up), counting what the engine computes.
    work = _EngineWork(llm)
    first = ours(0)
    work.restore()
    ref = reference(0)
    agree = compare(first, ref)
    print(
        f"check: same top-10 as igdbeam.generate on {agree.same_rows}/{agree.rows} rows, "
        f"tie rows {agree.tie_rows}, unexplained {agree.unexplained}, "
        f"max |score diff| {agree.max_score_diff:.2e}",
        flush=True,
    )
    if agree.unexplained:
        raise SystemExit("igdbeam.vllm disagrees with igdbeam.generate: no timing")
    prompt_tokens = sum(len(p) for p in batches[0])
    # transformers with the shared-prefix cache computes each prompt once, then one token per
    # running beam per step (an upper bound: every beam runs every step).
    generate_tokens = prompt_tokens + len(batches[0]) * args.beams * int(ref.lengths.max())
    print(
        f"engine work for {len(batches[0])} prompts ({prompt_tokens} prompt tokens): "
        f"{work.requests} requests, {work.computed} tokens computed ({work.cached} served from "
        f"the prefix cache); igdbeam.generate computes at most {generate_tokens} tokens",
        flush=True,
    )
    vllm_beams(0, 2)

    depth = setup.trie.max_depth
    sides = {
        "igdbeam.vllm": ours,
        f"vllm.beam_search(max_tokens={depth})": lambda r: vllm_beams(r, depth),
        "vllm.beam_search(max_tokens=13)": lambda r: vllm_beams(r, 13),
        "igdbeam.generate": reference,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(1, args.rounds + 1):
        for name, fn in sides.items():
            times[name].append(_time(lambda fn=fn, r=r: fn(r))[0])
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)

    ours_mean = statistics.mean(times["igdbeam.vllm"])
    ours_best = min(times["igdbeam.vllm"])
    rows = []
    print(
        f"\n{args.rows} prompts x {args.beams} beams, alpha {args.alpha}, float32, vLLM "
        f"{'compiled' if args.compiled else 'eager'} (init {t_init:.0f} s), "
        f"{torch.get_num_threads()} torch threads"
    )
    print(f"{'side':<36} {'mean s':>8} {'best s':>8} {'side/ours':>10} {'best ratio':>10}")
    for name, ts in times.items():
        mean, best = statistics.mean(ts), min(ts)
        rows.append(
            {
                "side": name,
                "mean_s": mean,
                "best_s": best,
                "ratio_mean": mean / ours_mean,
                "ratio_best": best / ours_best,
            }
        )
        print(
            f"{name:<36} {mean:>8.2f} {best:>8.2f} {mean / ours_mean:>10.2f} "
            f"{best / ours_best:>10.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "beams": args.beams,
                    "alpha": args.alpha,
                    "compiled": args.compiled,
                    "init_s": t_init,
                    "steps": first.seconds,
                    "same_rows": agree.same_rows,
                    "tie_rows": agree.tie_rows,
                    "max_score_diff": agree.max_score_diff,
                    "engine_requests": work.requests,
                    "engine_tokens_computed": work.computed,
                    "engine_tokens_cached": work.cached,
                    "generate_tokens_at_most": generate_tokens,
                    "results": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
