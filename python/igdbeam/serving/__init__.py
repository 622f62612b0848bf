"""``igdbeam serve``: IGD recommendations behind an HTTP API (``pip install "igdbeam[serve]"``).

:mod:`.requests` validates request bodies, :mod:`.catalog` maps ids / titles to prompts, masks
and answers, :mod:`.engines` decodes (transformers with micro-batching on one worker thread, or
vLLM with continuous batching) and :mod:`.app` is the Starlette application
(``igdbeam.serving.app.create_app``, which imports Starlette). Building an engine from a data
folder and a model is the application's job (:mod:`igdbeam.app.service`).
"""

from igdbeam.serving.catalog import ServingCatalog
from igdbeam.serving.engines import EngineStats, OverloadedError, TransformersEngine, VLLMEngine
from igdbeam.serving.requests import RecommendRequest, RequestError, parse_request

__all__ = [
    "EngineStats",
    "OverloadedError",
    "RecommendRequest",
    "RequestError",
    "ServingCatalog",
    "TransformersEngine",
    "VLLMEngine",
    "parse_request",
]
