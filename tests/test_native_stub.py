"""python/igdbeam/_C.pyi against the compiled igdbeam._C: same names, same argument lists.

The signatures of the module come from pybind11's docstring signature line (``name(a: T, b: U =
0) -> R``); the stub's from parsing the .pyi with ``ast``. A binding that gains, loses, renames or
retypes an argument, or a stub that forgets a function, fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import igdbeam
from igdbeam import _C

STUB = Path(igdbeam.__file__).with_name("_C.pyi")

# (name, kind, has_default) of one parameter; kind is a coarse type class (see _kind).
Param = tuple[str, str, bool]


def _kind(annotation: str) -> str:
    """A coarse type class of an annotation, written the stub's way or pybind11's way."""
    text = annotation.strip()
    if text in ("int",) or "SupportsInt" in text:
        return "int"
    if text in ("float",) or "SupportsFloat" in text:
        return "float"
    if text == "bool":
        return "bool"
    if text.split(".")[-1] == "TrieView":
        return "TrieView"
    return "other"


def _split_top_level(text: str) -> list[str]:
    """Split ``text`` at the commas that are not inside brackets or parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:])
    return parts


def parse_doc_signature(name: str, doc: str) -> list[Param]:
    """The parameters in pybind11's first docstring line ``name(a: T, b: U = 0) -> R``."""
    line = doc.strip().splitlines()[0]
    match = re.match(rf"^{re.escape(name)}\((.*)\) -> .*$", line)
    assert match, f"no pybind11 signature line in the docstring of {name}: {line!r}"
    params = []
    for part in _split_top_level(match.group(1)):
        head, _, default = part.partition("=")
        pname, _, annotation = head.partition(":")
        params.append((pname.strip(), _kind(annotation), bool(default.strip())))
    return [p for p in params if p[0] != "self"]


def stub_params(fn: ast.FunctionDef) -> list[Param]:
    """The parameters of a stub function (``self`` left out)."""
    args = fn.args.args
    first_default = len(args) - len(fn.args.defaults)
    params = []
    for i, a in enumerate(args):
        if a.arg == "self":
            continue
        annotation = ast.unparse(a.annotation) if a.annotation is not None else ""
        params.append((a.arg, _kind(annotation), i >= first_default))
    return params


def _public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))


def _stub_functions() -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in _stub_tree().body if isinstance(n, ast.FunctionDef)}


def _stub_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in _stub_tree().body if isinstance(n, ast.ClassDef)}


def test_stub_ships_next_to_the_module() -> None:
    # The wheel packages python/igdbeam, so the stub ships in the package that holds igdbeam._C.
    # An editable install (scikit-build-core's redirect mode) keeps the compiled module in
    # site-packages/igdbeam and the Python sources, stub included, in the checkout.
    assert STUB.is_file()
    assert _C.__name__ == "igdbeam._C"
    assert STUB.parent == Path(igdbeam.__file__).parent
    module_dir = Path(_C.__file__).parent
    assert module_dir == STUB.parent or module_dir.name == "igdbeam"


def test_stub_and_module_define_the_same_names() -> None:
    in_stub = set(_stub_functions()) | set(_stub_classes())
    in_module = _public(dir(_C))
    assert in_module - in_stub == set(), "bound but missing from _C.pyi"
    assert in_stub - in_module == set(), "in _C.pyi but not bound"


@pytest.mark.parametrize("name", sorted(_public(dir(_C)) - {"TrieView"}))
def test_function_signatures_match(name: str) -> None:
    fn = _stub_functions()[name]
    assert parse_doc_signature(name, getattr(_C, name).__doc__) == stub_params(fn)


def test_trie_view_matches() -> None:
    cls = _stub_classes()["TrieView"]
    members = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    init_params = parse_doc_signature("__init__", _C.TrieView.__init__.__doc__)
    assert init_params == stub_params(members.pop("__init__"))
    declared = set(members) | {
        n.target.id
        for n in cls.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    bound = _public(dir(_C.TrieView))
    assert bound - declared == set(), "TrieView members missing from _C.pyi"
    # The stub may declare only what the class has, plus attributes it accepts dynamically
    # (py::dynamic_attr: ItemTrie stores the owning trie on its view as `owner`).
    extra = declared - bound
    assert extra <= {"owner"} and "__dict__" in dir(_C.TrieView), extra


def test_op_signature_parser_sees_every_argument() -> None:
    # The parser itself: a made-up pybind11 line with nested brackets and a default.
    doc = "f(a: typing.SupportsInt, b: dict[str, int], c: bool = False) -> object\n\ntext"
    assert parse_doc_signature("f", doc) == [
        ("a", "int", False),
        ("b", "other", False),
        ("c", "bool", True),
    ]
