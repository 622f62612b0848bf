"""``igdbeam serve``: an HTTP recommendation service (``POST /v1/recommend``, ``GET /health``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from igdbeam.app.cli.arg_types import (
    finite_float,
    non_negative_float,
    positive_int,
    unit_float,
)
from igdbeam.app.cli.formatting import HelpFormatter


def add_parser(sub: Any) -> None:
    """Register ``igdbeam serve`` on the CLI's subparsers."""
    p = sub.add_parser(
        "serve",
        help="serve IGD recommendations over HTTP (POST /v1/recommend, GET /health)",
        description="Load the catalog of --data and the model of --model, build the trie and "
        'answer POST /v1/recommend with a JSON body {"history": [item ids or titles], "k": '
        '10, "alpha": 0.2, "exclude_history": true, "item_mask": [allowed ids]} with '
        '{"items": [{"id", "title", "score"}, ...]}. Concurrent requests are batched: '
        "micro-batches on the transformers engine, continuous batching on vLLM. Needs "
        "'pip install igdbeam[serve]' (and igdbeam[vllm] for --engine vllm).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="BIGRec folder (info.txt, train.csv)")
    p.add_argument(
        "--model",
        required=True,
        help="transformers checkpoint folder (a LoRA adapter folder on the transformers engine) "
        "or 'smollm2'",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "transformers", "vllm"),
        default="auto",
        help="decoder: igdbeam.generate with micro-batching, or igdbeam.vllm on a vLLM AsyncLLM; "
        "auto takes vLLM when it is installed",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=positive_int, default=8000, help="TCP port")
    p.add_argument("--num-beams", type=positive_int, default=10, help="beams (at least k)")
    p.add_argument("--alpha", type=unit_float, default=0.2, help="default IGD alpha")
    p.add_argument("--length-penalty", type=finite_float, default=0.0, help="0: D3-style scores")
    p.add_argument("--max-k", type=positive_int, default=100, help="largest k a request may ask")
    p.add_argument("--template", choices=("igd", "d3"), default="igd", help="prompt template")
    p.add_argument("--catalog", choices=("all", "train-targets"), default="all", help="trie scope")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16", "auto"), default="float32", help="model dtype"
    )
    p.add_argument(
        "--max-batch", type=positive_int, default=16, help="transformers engine: batch size"
    )
    p.add_argument(
        "--max-wait-ms",
        type=non_negative_float,
        default=5.0,
        help="transformers engine: how long a batch waits for more requests",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")


def cmd_serve(args: argparse.Namespace) -> int:
    """Build the engine, then serve until interrupted."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"igdbeam serve needs {', '.join(missing)}: pip install 'igdbeam[serve]'")
    if not Path(args.data).is_dir():
        raise ValueError(f"--data {str(args.data)!r} is not a folder")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    import uvicorn

    from igdbeam.app.service import build_engine
    from igdbeam.serving.app import create_app

    engine = build_engine(
        args.data,
        args.model,
        engine=args.engine,
        template=args.template,
        catalog_scope=args.catalog,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        dtype=args.dtype,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    app = create_app(engine, max_k=args.max_k, default_alpha=args.alpha)
    print(
        f"igdbeam serve: {engine.name} engine, {engine.catalog.num_items} items, "
        f"http://{args.host}:{args.port}/v1/recommend",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
