"""The one source of every native op's argument lists.

Each :class:`OpSpec` holds two lists of one op:

* ``inputs`` / ``outputs``: the ``torch.library`` schema of ``igdbeam::<name>`` (tensors, ints,
  floats, bools), which :mod:`igdbeam.native.torch_ops` registers;
* ``native``: the argument list of the pybind11 binding ``igdbeam._C.<name>`` (pointers as ints,
  shapes, strides), before the trailing ``device`` and ``stream`` that every binding takes.

Everything else is generated from this table or checked against it:

* the schema strings (:meth:`OpSpec.schema`), registered by ``torch_ops``;
* the native calls: ``torch_ops`` passes the binding's arguments by name through
  :func:`native_args`, which orders them by this table and refuses a missing or unknown name;
* the op functions of ``python/igdbeam/_C.pyi`` and the argument tables of
  ``csrc/bindings/README.md``, between their ``generated`` markers (:func:`render_stub_ops`,
  :func:`render_readme_tables`; ``python -m igdbeam.native.op_table --write`` rewrites both);
* ``tests/test_op_schemas.py`` checks that the registered schemas, the files above and the
  compiled module's ``py::arg`` names and types (pybind11's signature line) agree with the table.

A schema input that shares its name with a native argument is passed on as that argument (a
tensor becomes its ``data_ptr()``, ``trie`` a ``_C.TrieView``); the other native arguments are
derived from the tensors (shapes, strides, dtype codes) or are outputs (``out_*``).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "NAMESPACE",
    "OPS",
    "TRAILING_NATIVE_ARGS",
    "TRIE_ARRAYS",
    "Arg",
    "NativeArg",
    "OpSpec",
    "native_args",
    "render_readme_tables",
    "render_stub_ops",
]

NAMESPACE = "igdbeam"

# The trie's per-node arrays in the order the native TrieView takes their pointers (the schema's
# ``Tensor[] trie``); the same order as igdbeam.trie.layout.NODE_ARRAYS (checked by a test).
TRIE_ARRAYS: tuple[str, ...] = (
    "child_offsets",
    "token",
    "parent",
    "depth",
    "entropy",
    "info_gain",
    "info_gain_norm",
    "zero_ig",
)

NativeKind = Literal["TrieView", "ptr", "int", "float", "bool"]
_STUB_TYPES: dict[str, str] = {
    "TrieView": "TrieView",
    "ptr": "int",
    "int": "int",
    "float": "float",
    "bool": "bool",
}


@dataclass(frozen=True)
class Arg:
    """One schema input or output: ``type`` is a torch schema type (``Tensor``, ``Tensor?``,
    ``Tensor(a!)``, ``Tensor[]``, ``int``, ``float``, ``bool``, ``str``)."""

    name: str
    type: str
    doc: str


@dataclass(frozen=True)
class NativeArg:
    """One argument of a pybind11 binding: ``kind`` ``ptr`` is a ``data_ptr()`` (0 = absent)."""

    name: str
    kind: NativeKind
    doc: str = ""

    def readme(self) -> str:
        """The argument as the bindings README lists it: ``name(doc)`` or ``name``."""
        return f"`{self.name}({self.doc})`" if self.doc else f"`{self.name}`"


@dataclass(frozen=True)
class OpSpec:
    """One op: its schema, its native binding (None: a Python-only op) and what it does."""

    name: str
    summary: str
    inputs: tuple[Arg, ...]
    outputs: tuple[Arg, ...]
    native: tuple[NativeArg, ...] | None

    @property
    def qualname(self) -> str:
        """``igdbeam::<name>``."""
        return f"{NAMESPACE}::{self.name}"

    @property
    def mutated(self) -> tuple[str, ...]:
        """Names of the inputs the op writes in place (``Tensor(a!)``)."""
        return tuple(a.name for a in self.inputs if "!" in a.type)

    def schema(self) -> str:
        """The schema without the op's name: ``(Tensor x, int k) -> (Tensor a, Tensor b)``."""
        args = ", ".join(f"{a.type} {a.name}" for a in self.inputs)
        rets = ", ".join(f"{a.type} {a.name}" for a in self.outputs)
        return f"({args}) -> ({rets})"

    @property
    def native_names(self) -> tuple[str, ...]:
        """The binding's argument names before ``device`` and ``stream``."""
        return () if self.native is None else tuple(a.name for a in self.native)


# ---------------------------------------------------------------------------------- the table
_TRIE = (
    Arg("trie", "Tensor[]", f"the trie's node arrays ({', '.join(TRIE_ARRAYS)})"),
    Arg("max_fanout", "int", "the trie's largest fan-out (0: unknown)"),
)
_NATIVE_TRIE = NativeArg("trie", "TrieView")
_FILTER_INPUTS = (
    Arg("node_mask", "Tensor?", "int64 [ceil(P / 64), num_nodes] bit-packed item filter"),
    Arg("node_score", "Tensor?", "float32 [P, num_nodes] CF log-mass"),
    Arg("score_weight", "float", "weight of the CF term"),
    Arg("filter_rows", "Tensor?", "int32 prompt (filter row) of each decoded row; None: identity"),
    Arg("filter_count", "int", "P, the filter rows (bounds filter_rows)"),
)
_NATIVE_FILTER = (
    NativeArg("node_mask", "ptr", "uint64 [ceil(P/64), num_nodes] or 0"),
    NativeArg("node_score", "ptr", "f32 [P, num_nodes] or 0"),
    NativeArg("score_weight", "float"),
    NativeArg("filter_rows", "ptr", "int32 [decoded rows] or 0: the identity"),
    NativeArg("filter_row_stride", "int", "num_nodes"),
)

OPS: dict[str, OpSpec] = {
    op.name: op
    for op in (
        OpSpec(
            "walk_paths",
            "Walk int64 token rows from the root; writes the int32 node reached or -1.",
            _TRIE
            + (
                Arg("tokens", "Tensor", "int64 [rows, cols], unit stride in the last dim"),
                Arg("lengths", "Tensor?", "int64 [rows] in [0, cols]; None: every column"),
            ),
            (Arg("nodes", "Tensor", "int32 [rows], -1 off the trie"),),
            (
                _NATIVE_TRIE,
                NativeArg("tokens", "ptr", "int64 [rows, cols]"),
                NativeArg("rows", "int"),
                NativeArg("cols", "int"),
                NativeArg("row_stride", "int"),
                NativeArg("lengths", "ptr", "int64 [rows] or 0"),
                NativeArg("out_nodes", "ptr", "int32 [rows]"),
            ),
        ),
        OpSpec(
            "label_weights",
            "Per-token IG, zero-IG flags and weights of int64 label rows.",
            _TRIE
            + (
                Arg("labels", "Tensor", "int64 [rows, cols], unit stride in the last dim"),
                Arg("ignore_index", "int", "label of prompt and padding positions"),
                Arg("beta", "float", "weight of zero-IG tokens, in [0, 1]"),
                Arg("policy", "int", "off-trie rows: 0 error (raises), 1 uniform, 2 ignore"),
            ),
            (
                Arg("info_gain", "Tensor", "float32 [rows, cols]"),
                Arg("zero_ig", "Tensor", "bool [rows, cols]"),
                Arg("weight", "Tensor", "float32 [rows, cols]"),
                Arg("row_status", "Tensor", "int32 [rows]: 0 ok, 1 left the trie"),
            ),
            (
                _NATIVE_TRIE,
                NativeArg("labels", "ptr", "int64 [rows, cols]"),
                NativeArg("rows", "int"),
                NativeArg("cols", "int"),
                NativeArg("row_stride", "int"),
                NativeArg("ignore_index", "int"),
                NativeArg("beta", "float"),
                NativeArg("policy", "int", "0 error, 1 uniform, 2 ignore"),
                NativeArg("out_info_gain", "ptr", "f32 [rows, cols]"),
                NativeArg("out_zero_ig", "ptr", "uint8 [rows, cols]"),
                NativeArg("out_weight", "ptr", "f32 [rows, cols]"),
                NativeArg("out_row_status", "ptr", "int32 [rows]"),
            ),
        ),
        OpSpec(
            "check_labels",
            "Raise VocabularyError unless every label is ignore_index or in [0, vocab_size).",
            (
                Arg("labels", "Tensor", "integer [rows, cols]"),
                Arg("vocab_size", "int", "exclusive upper bound; -1: only negatives are refused"),
                Arg("ignore_index", "int", "label of prompt and padding positions"),
                Arg("name", "str", "the argument's name in the error message"),
            ),
            (),
            None,
        ),
        OpSpec(
            "processor_step",
            "Constrain and IG-reweight every scores row in place, with an optional item filter.",
            _TRIE
            + (
                Arg("input_ids", "Tensor", "int64 [rows, seq_len], unit stride in the last dim"),
                Arg("scores", "Tensor(a!)", "float32/bfloat16/float16 [rows, vocab], in place"),
                Arg("prompt_len", "int", "prompt columns of input_ids"),
                Arg("alpha", "float", "debiasing strength in [0, 1]"),
                Arg("temperature", "float", "> 0"),
                Arg("renormalize", "bool", "renormalise over the allowed tokens"),
                Arg("eos_token_id", "int", "the only token allowed at a leaf; -1: none"),
            )
            + _FILTER_INPUTS
            + (Arg("validate", "bool", "raise ValueError on NaN scores among the children"),),
            (
                Arg("nodes", "Tensor", "int32 [rows], -1 off the trie"),
                Arg("row_status", "Tensor", "int32 [rows]: 0 ok, 1 left the trie, 2 NaN"),
            ),
            (
                _NATIVE_TRIE,
                NativeArg("input_ids", "ptr", "int64 [rows, seq_len]"),
                NativeArg("rows", "int"),
                NativeArg("seq_len", "int"),
                NativeArg("ids_row_stride", "int"),
                NativeArg("prompt_len", "int"),
                NativeArg("scores", "ptr", "dtype [rows, vocab], modified in place"),
                NativeArg("dtype_code", "int", "0 f32, 1 bf16, 2 f16"),
                NativeArg("vocab", "int"),
                NativeArg("scores_row_stride", "int"),
                NativeArg("alpha", "float"),
                NativeArg("temperature", "float"),
                NativeArg("renormalize", "bool"),
                NativeArg("eos_token_id", "int", "-1: none"),
                NativeArg("out_nodes", "ptr", "int32 [rows]"),
                NativeArg("out_row_status", "ptr", "int32 [rows]"),
            )
            + _NATIVE_FILTER,
        ),
        OpSpec(
            "beam_step",
            "Fused beam step: the best num_candidates children of the active beams of each "
            "batch row.",
            _TRIE
            + (
                Arg("logits", "Tensor", "float32/bfloat16/float16 [batch * beams, vocab]"),
                Arg("beam_scores", "Tensor", "float32 [batch * beams]"),
                Arg("nodes", "Tensor", "int32 [batch * beams], negative: inactive"),
                Arg("beams", "int", "beams per batch row"),
                Arg("alpha", "float", "debiasing strength in [0, 1]"),
                Arg("temperature", "float", "> 0"),
                Arg("renormalize", "bool", "renormalise over each beam's children"),
                Arg("num_candidates", "int", "C, candidates kept per batch row"),
            )
            + _FILTER_INPUTS
            + (
                Arg("select_slices", "int", "CUDA launch hint (0: automatic)"),
                Arg("candidate_bound", "int", "CUDA launch hint (0: from the trie)"),
            ),
            (
                Arg("score", "Tensor", "float32 [batch, C]"),
                Arg("logp", "Tensor", "float32 [batch, C]"),
                Arg("beam", "Tensor", "int32 [batch, C]"),
                Arg("token", "Tensor", "int64 [batch, C]"),
                Arg("node", "Tensor", "int32 [batch, C]"),
            ),
            (
                _NATIVE_TRIE,
                NativeArg("logits", "ptr", "dtype [batch*beams, vocab]"),
                NativeArg("dtype_code", "int"),
                NativeArg("batch", "int"),
                NativeArg("beams", "int"),
                NativeArg("vocab", "int"),
                NativeArg("logits_row_stride", "int"),
                NativeArg("beam_scores", "ptr", "f32 [batch*beams]"),
                NativeArg("nodes", "ptr", "int32 [batch*beams]"),
                NativeArg("alpha", "float"),
                NativeArg("temperature", "float"),
                NativeArg("renormalize", "bool"),
                NativeArg("num_candidates", "int"),
                NativeArg("out_score", "ptr", "f32 [batch, C]"),
                NativeArg("out_logp", "ptr", "f32 [batch, C]"),
                NativeArg("out_beam", "ptr", "int32 [batch, C]"),
                NativeArg("out_token", "ptr", "int64 [batch, C]"),
                NativeArg("out_node", "ptr", "int32 [batch, C]"),
            )
            + _NATIVE_FILTER
            + (NativeArg("select_slices", "int"), NativeArg("candidate_bound", "int")),
        ),
        OpSpec(
            "build_node_filters",
            "Per-node item filter mask and CF log-mass from per-row item inputs.",
            _TRIE
            + (
                Arg("leaf_nodes", "Tensor", "int32 [num_leaves], the trie's leaf array"),
                Arg("leaf_item_offsets", "Tensor", "int32 [num_leaves + 1]"),
                Arg("leaf_items", "Tensor", "int32, the items of each leaf"),
                Arg("num_items", "int", "the catalog's item count"),
                Arg("rows", "int", "P, the prompts"),
                Arg("item_mask", "Tensor?", "bool [1 or P, num_items]"),
                Arg("item_scores", "Tensor?", "float32 [1 or P, num_items]"),
                Arg("max_depth", "int", "the trie's depth"),
            ),
            (
                Arg("node_mask", "Tensor", "int64 [ceil(P / 64), num_nodes] ([0, n]: no mask)"),
                Arg("node_score", "Tensor", "float32 [P, num_nodes] ([0, n]: no scores)"),
            ),
            (
                _NATIVE_TRIE,
                NativeArg("leaf_nodes", "ptr", "int32 [num_leaves]"),
                NativeArg("leaf_item_offsets", "ptr", "int32 [num_leaves + 1]"),
                NativeArg("leaf_items", "ptr", "int32"),
                NativeArg("num_leaves", "int"),
                NativeArg("num_items", "int"),
                NativeArg("rows", "int"),
                NativeArg("item_mask", "ptr", "uint8 [rows, num_items] or 0"),
                NativeArg("mask_row_stride", "int", "0: one row for all"),
                NativeArg("item_scores", "ptr", "f32 [rows, num_items] or 0"),
                NativeArg("scores_row_stride", "int"),
                NativeArg("out_node_mask", "ptr", "uint64 [ceil(rows/64), num_nodes] or 0"),
                NativeArg("out_node_score", "ptr", "f32 [rows, num_nodes] or 0"),
                NativeArg("num_threads", "int", "CPU threads, >= 1"),
                NativeArg("max_depth", "int", "the trie's depth, read by CUDA"),
            ),
        ),
    )
}

# The arguments every binding takes after its own (csrc/bindings/README.md).
TRAILING_NATIVE_ARGS: tuple[NativeArg, ...] = (
    NativeArg("device", "int", "0 CPU, 1 CUDA"),
    NativeArg("stream", "int", "the CUDA stream handle, 0 on the CPU"),
)
_ORDER: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    name: (op.native_names, frozenset(op.native_names)) for name, op in OPS.items()
}


def native_args(op: str, values: dict[str, Any]) -> list[Any]:
    """The positional arguments of ``_C.<op>`` (before ``device`` and ``stream``) from
    ``values`` keyed by the table's names.

    Raises:
        TypeError: ``values`` misses a name of the table or has one the table does not list.
    """
    order, names = _ORDER[op]
    if values.keys() != names:
        missing = sorted(names - values.keys())
        unknown = sorted(values.keys() - names)
        raise TypeError(f"{op}: native arguments missing {missing}, unknown {unknown}")
    return [values[name] for name in order]


# -------------------------------------------------------------------------- generated texts
STUB_BEGIN = "# --- generated by igdbeam/native/op_table.py: do not edit by hand ---"
STUB_END = "# --- end of generated ops ---"
README_BEGIN = "<!-- generated by python/igdbeam/native/op_table.py: do not edit by hand -->"
README_END = "<!-- end of generated tables -->"


def render_stub_ops() -> str:
    """The op functions of ``_C.pyi`` (between its markers), one per op with a binding."""
    blocks = []
    for op in OPS.values():
        if op.native is None:
            continue
        params = "".join(
            f"    {a.name}: {_STUB_TYPES[a.kind]},\n" for a in op.native + TRAILING_NATIVE_ARGS
        )
        blocks.append(
            f'def {op.name}(\n{params}) -> tuple[int, str] | None:\n    """{op.summary}"""\n'
        )
    return "\n".join(blocks) + "\n"


def render_readme_tables() -> str:
    """The bindings README's two tables: native argument lists and registered schemas."""
    lines = [
        "| binding | arguments (after `trie`, before `device, stream`) |",
        "|---|---|",
    ]
    for op in OPS.values():
        if op.native is not None:
            args = ", ".join(a.readme() for a in op.native if a.name != "trie")
            lines.append(f"| `{op.name}` | {args} |")
    lines += ["", "| registered op | schema |", "|---|---|"]
    for op in OPS.values():
        lines.append(f"| `{op.qualname}` | `{op.schema()}` |")
    return "\n".join(lines) + "\n"


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with the lines between the ``begin`` and ``end`` marker lines set to ``body``.

    Raises:
        ValueError: a marker is missing.
    """
    pattern = re.compile(rf"({re.escape(begin)}\n)(.*?)(^{re.escape(end)})", re.S | re.M)
    if not pattern.search(text):
        raise ValueError(f"markers {begin!r} ... {end!r} not found")
    return pattern.sub(lambda m: m.group(1) + body + m.group(3), text, count=1)


def generated_files(root: Path | None = None) -> dict[Path, tuple[str, str, str]]:
    """The files that hold generated text: path -> (begin marker, end marker, text).

    ``root`` is a source checkout (its ``python/igdbeam/_C.pyi`` and
    ``csrc/bindings/README.md``); None: the stub next to this package, and the README when the
    package is a source checkout's (an installed copy has no README).
    """
    package = Path(__file__).resolve().parents[1] if root is None else root / "python" / "igdbeam"
    files = {package / "_C.pyi": (STUB_BEGIN, STUB_END, render_stub_ops())}
    readme = package.parents[1] / "csrc" / "bindings" / "README.md"
    if readme.is_file():  # a source checkout
        files[readme] = (README_BEGIN, README_END, render_readme_tables())
    return files


def main(argv: list[str] | None = None) -> int:
    """Check (default) or rewrite (``--write``) the generated parts of the stub and README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files in place")
    args = parser.parse_args(argv)
    stale = []
    for path, (begin, end, body) in generated_files().items():
        text = path.read_text(encoding="utf-8")
        new = replace_between(text, begin, end, body)
        if new != text:
            stale.append(path)
            if args.write:
                path.write_text(new, encoding="utf-8")
    for path in stale:
        print(f"{'rewrote' if args.write else 'stale'}: {path}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    raise SystemExit(main())
