"""One source for each op's argument lists: everything agrees with ``native/op_table.py``.

The table holds, per op, the ``torch.library`` schema and the pybind11 binding's argument list.
Checked here against it: the schemas registered under ``torch.ops.igdbeam``, the compiled
module's ``py::arg`` names and C++ types (pybind11's signature line), the generated parts of
``_C.pyi`` and ``csrc/bindings/README.md``, the trie array order of ``_C.TrieView`` and
``trie/layout.py``, and how schema arguments map onto binding arguments.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from igdbeam import _C
from igdbeam.native import op_table
from igdbeam.native.op_table import OPS, TRAILING_NATIVE_ARGS, TRIE_ARRAYS, native_args
from igdbeam.native.torch_ops import REGISTERED
from igdbeam.trie.layout import NODE_ARRAYS
from test_native_stub import parse_doc_signature

BOUND = sorted(name for name, op in OPS.items() if op.native is not None)
# Binding arguments that no schema argument names: derived from the tensors by the kernel, or
# the outputs it allocates (out_*). A new binding argument must be added here or to the schema.
DERIVED = {
    "rows",
    "cols",
    "row_stride",
    "seq_len",
    "ids_row_stride",
    "dtype_code",
    "vocab",
    "scores_row_stride",
    "batch",
    "logits_row_stride",
    "filter_row_stride",
    "num_leaves",
    "mask_row_stride",
    "num_threads",
}
# The binding kind each schema type is passed on as.
PASSED_AS = {
    "Tensor[]": "TrieView",
    "Tensor": "ptr",
    "Tensor?": "ptr",
    "Tensor(a!)": "ptr",
    "int": "int",
    "float": "float",
    "bool": "bool",
}
# pybind11's coarse kinds (test_native_stub._kind) of the table's native kinds.
PYBIND_KIND = {"TrieView": "TrieView", "ptr": "int", "int": "int", "float": "float", "bool": "bool"}


def test_every_op_is_registered_once_with_the_tables_schema() -> None:
    assert set(REGISTERED) == set(OPS)
    for name, spec in OPS.items():
        expected = torch._C.parse_schema(spec.qualname + spec.schema())
        registered = getattr(torch.ops.igdbeam, name).default._schema
        assert str(registered) == str(expected), name
        assert REGISTERED[name] is getattr(torch.ops.igdbeam, name).default
        assert spec.mutated == (("scores",) if name == "processor_step" else ())


@pytest.mark.parametrize("name", BOUND)
def test_binding_arguments_match_the_table(name: str) -> None:
    doc = getattr(_C, name).__doc__
    expected = [
        (a.name, PYBIND_KIND[a.kind], False) for a in OPS[name].native + TRAILING_NATIVE_ARGS
    ]
    assert parse_doc_signature(name, doc) == expected


def test_the_module_binds_exactly_the_tables_ops() -> None:
    ops_in_module = {
        n for n in dir(_C) if not n.startswith("_") and n not in {"TrieView", "has_cuda"}
    }
    assert ops_in_module - {"build_trie"} == set(BOUND)


@pytest.mark.parametrize("name", sorted(OPS))
def test_schema_arguments_map_onto_binding_arguments(name: str) -> None:
    spec = OPS[name]
    if spec.native is None:
        return
    native = {a.name: a.kind for a in spec.native}
    schema_names = {a.name for a in spec.inputs}
    for arg in spec.inputs:
        if arg.name in native:
            assert native[arg.name] == PASSED_AS[arg.type], (name, arg.name)
    for arg_name in native.keys() - schema_names:
        assert arg_name in DERIVED or arg_name.startswith("out_"), (name, arg_name)
    assert spec.inputs[0].name == "trie" and spec.native[0].name == "trie"


def test_trie_arrays_are_in_the_views_order() -> None:
    assert TRIE_ARRAYS == NODE_ARRAYS
    init = parse_doc_signature("__init__", _C.TrieView.__init__.__doc__)
    assert tuple(p[0] for p in init[1 : 1 + len(TRIE_ARRAYS)]) == TRIE_ARRAYS
    assert init[0][0] == "num_nodes" and init[-1][0] == "max_fanout"


def test_generated_stub_and_readme_are_current() -> None:
    # The checkout's files (the tests may run against an installed copy of the package).
    files = op_table.generated_files(Path(__file__).resolve().parents[1])
    assert len(files) == 2, "the bindings README was not found in the checkout"
    for path, (begin, end, body) in files.items():
        text = path.read_text(encoding="utf-8")
        match = re.search(rf"{re.escape(begin)}\n(.*?)^{re.escape(end)}", text, re.S | re.M)
        assert match, f"generated markers missing in {path}"
        assert match.group(1) == body, f"{path} is stale: python -m igdbeam.native.op_table --write"
    assert op_table.main([]) == 0


def test_generated_stub_lists_every_binding_argument() -> None:
    # An independent reading of the generated text: one line per argument, in the table's order.
    stub = op_table.render_stub_ops()
    for name in BOUND:
        block = re.search(rf"^def {name}\(\n(.*?)^\)", stub, re.S | re.M)
        assert block, name
        names = [line.strip().split(":")[0] for line in block.group(1).splitlines()]
        assert names == [*OPS[name].native_names, "device", "stream"]


def test_readme_table_rows_follow_the_table() -> None:
    tables = op_table.render_readme_tables()
    for name in BOUND:
        row = next(line for line in tables.splitlines() if line.startswith(f"| `{name}` |"))
        listed = re.findall(r"`(\w+)(?:\(|`)", row.split("|")[2])
        assert listed == [n for n in OPS[name].native_names if n != "trie"]
    for spec in OPS.values():
        assert f"| `{spec.qualname}` | `{spec.schema()}` |" in tables


def test_native_args_orders_by_the_table_and_refuses_wrong_names() -> None:
    spec = OPS["walk_paths"]
    values = {n: i for i, n in enumerate(reversed(spec.native_names))}
    assert native_args("walk_paths", values) == [values[n] for n in spec.native_names]
    with pytest.raises(TypeError, match=r"missing \['out_nodes'\]"):
        native_args("walk_paths", {k: v for k, v in values.items() if k != "out_nodes"})
    with pytest.raises(TypeError, match=r"unknown \['extra'\]"):
        native_args("walk_paths", {**values, "extra": 1})


def test_replace_between_rewrites_only_the_marked_lines(tmp_path: Path) -> None:
    text = "head\nBEGIN\nold\nlines\nEND\ntail\n"
    assert (
        op_table.replace_between(text, "BEGIN", "END", "new\n") == "head\nBEGIN\nnew\nEND\ntail\n"
    )
    with pytest.raises(ValueError, match="markers"):
        op_table.replace_between("no markers\n", "BEGIN", "END", "x\n")
