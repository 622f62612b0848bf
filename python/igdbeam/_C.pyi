# ruff: noqa: N999  (the module name is fixed by the extension)
"""Type stub of igdbeam._C, the native module built from csrc/bindings (see its README.md).

Pointers are plain ints (``tensor.data_ptr()``, 0 = absent). Every op takes one argument list
for both backends, then ``device`` (0 = CPU, 1 = CUDA) and ``stream`` (the CUDA stream handle,
0 on the CPU), and returns None on success or ``(code, message)``: 1 invalid argument, 2 runtime
or CUDA error, 3 CUDA asked of a build without CUDA kernels. tests/test_native_stub.py checks
this file against the compiled module.
"""

from typing import Any

import numpy as np

class TrieView:
    """Raw pointers to a trie's arrays (host or device); built by igdbeam.ItemTrie."""

    owner: Any
    def __init__(
        self,
        num_nodes: int,
        child_offsets: int,
        token: int,
        parent: int,
        depth: int,
        entropy: int,
        info_gain: int,
        info_gain_norm: int,
        zero_ig: int,
        max_fanout: int = 0,
    ) -> None: ...
    @property
    def num_nodes(self) -> int: ...
    @property
    def max_fanout(self) -> int: ...

def has_cuda() -> bool:
    """True when the CUDA kernels were compiled in."""

def build_trie(
    offsets: np.ndarray,
    tokens: np.ndarray,
    weights: np.ndarray | None,
    entropy_mode: int,
    vocab_size: int,
    equal_ig_rtol: float,
) -> dict[str, Any]:
    """Build the CSR trie from token paths; returns its arrays (raises ValueError on bad input)."""

def walk_paths(
    trie: TrieView,
    tokens: int,
    rows: int,
    cols: int,
    row_stride: int,
    lengths: int,
    out_nodes: int,
    device: int,
    stream: int,
) -> tuple[int, str] | None:
    """Walk int64 token rows from the root; writes the int32 node reached or -1."""

def label_weights(
    trie: TrieView,
    labels: int,
    rows: int,
    cols: int,
    row_stride: int,
    ignore_index: int,
    beta: float,
    policy: int,
    out_info_gain: int,
    out_zero_ig: int,
    out_weight: int,
    out_row_status: int,
    device: int,
    stream: int,
) -> tuple[int, str] | None:
    """Per-token IG, zero-IG flags and weights of int64 label rows."""

def processor_step(
    trie: TrieView,
    input_ids: int,
    rows: int,
    seq_len: int,
    ids_row_stride: int,
    prompt_len: int,
    scores: int,
    dtype_code: int,
    vocab: int,
    scores_row_stride: int,
    alpha: float,
    temperature: float,
    renormalize: bool,
    eos_token_id: int,
    out_nodes: int,
    out_row_status: int,
    node_mask: int,
    node_score: int,
    score_weight: float,
    filter_rows: int,
    filter_row_stride: int,
    device: int,
    stream: int,
) -> tuple[int, str] | None:
    """Constrain and IG-reweight every scores row in place, with an optional item filter."""

def beam_step(
    trie: TrieView,
    logits: int,
    dtype_code: int,
    batch: int,
    beams: int,
    vocab: int,
    logits_row_stride: int,
    beam_scores: int,
    nodes: int,
    alpha: float,
    temperature: float,
    renormalize: bool,
    num_candidates: int,
    out_score: int,
    out_logp: int,
    out_beam: int,
    out_token: int,
    out_node: int,
    node_mask: int,
    node_score: int,
    score_weight: float,
    filter_rows: int,
    filter_row_stride: int,
    select_slices: int,
    candidate_bound: int,
    device: int,
    stream: int,
) -> tuple[int, str] | None:
    """Fused beam step: the best num_candidates children of the active beams of each batch row."""

def build_node_filters(
    trie: TrieView,
    leaf_nodes: int,
    leaf_item_offsets: int,
    leaf_items: int,
    num_leaves: int,
    num_items: int,
    rows: int,
    item_mask: int,
    mask_row_stride: int,
    item_scores: int,
    scores_row_stride: int,
    out_node_mask: int,
    out_node_score: int,
    num_threads: int,
    max_depth: int,
    device: int,
    stream: int,
) -> tuple[int, str] | None:
    """Per-node item filter mask and CF log-mass from per-row item inputs."""
