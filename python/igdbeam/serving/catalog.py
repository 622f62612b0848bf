"""What the service knows about the catalog: ids and titles, prompts, item masks, answers.

:class:`ServingCatalog` turns a validated request into the decoder's inputs (the prompt's
token ids and the row of ``item_mask``) and a decoded row into the JSON answer; it is shared,
read only, by every request and both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from igdbeam.serving.requests import RecommendRequest, RequestError

if TYPE_CHECKING:
    from igdbeam.data.bigrec_csv import Catalog
    from igdbeam.trie.item_trie import ItemTrie


class ServingCatalog:
    """The catalog, tokenizer, prompt template and trie of a running service.

    Args:
        catalog: the items (``info.txt``: ``titles[k]`` and file id ``ids[k]`` of position
            ``k``; trie item ids are positions).
        tokenizer: the model's tokenizer.
        trie: the catalog trie built with the same tokenizer and template.
        template: the prompt template name (``igd`` or ``d3``).
        max_prompt_tokens: oldest history items are dropped until the prompt fits.
    """

    def __init__(
        self,
        catalog: Catalog,
        tokenizer: Any,
        trie: ItemTrie,
        *,
        template: str = "igd",
        max_prompt_tokens: int = 512,
    ) -> None:
        """Index ids and titles (a title shared by several items resolves to the first)."""
        self.catalog, self.tokenizer, self.trie = catalog, tokenizer, trie
        self.template, self.max_prompt_tokens = template, int(max_prompt_tokens)
        self.num_items = len(catalog)
        self._by_title: dict[str, int] = {}
        for k, title in enumerate(catalog.titles):
            self._by_title.setdefault(title, k)
        self._by_id = {int(i): k for k, i in enumerate(catalog.ids)}

    def resolve(self, value: Any, field: str) -> int:
        """Catalog position of an item given by its ``info.txt`` id or its exact title."""
        if isinstance(value, str):
            pos = self._by_title.get(value)
            if pos is None:
                raise RequestError(field, f"unknown item title {value[:200]!r}")
            return pos
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(field, f"must be an item id (integer) or title, got {value!r}")
        pos = self._by_id.get(value)
        if pos is None:
            raise RequestError(field, f"unknown item id {value}")
        return pos

    def prompt_ids(self, history: Sequence[int]) -> list[int]:
        """Token ids of the prompt for a history of catalog positions (oldest first)."""
        from igdbeam.training.prompts import fit_prompt

        titles = [self.catalog.titles[p] for p in history]
        return fit_prompt(self.tokenizer, titles, self.template, self.max_prompt_tokens)[1]

    def mask_row(self, request: RecommendRequest) -> np.ndarray | None:
        """bool ``[num_items]`` of the items the request may get (None: all)."""
        if not request.excluded_or_restricted():
            return None
        if request.allowed is None:
            row = np.ones(self.num_items, dtype=bool)
        else:
            row = np.zeros(self.num_items, dtype=bool)
            row[list(request.allowed)] = True
        if request.exclude_history:
            row[list(request.history)] = False
        return row

    def answer(self, item_ids: Sequence[int], scores: Sequence[float], k: int) -> dict[str, Any]:
        """The JSON answer of one decoded row: at most ``k`` items, best first."""
        items: list[dict[str, Any]] = []
        for pos, score in zip(item_ids, scores, strict=True):
            if pos < 0 or len(items) == k:
                continue
            items.append(
                {
                    "id": int(self.catalog.ids[pos]),
                    "title": self.catalog.titles[pos],
                    "score": float(score),
                }
            )
        return {"items": items}
