"""Every ```python block of README.md runs as written, in a fresh namespace and an empty working
folder; README links stay inside the repository.

Blocks that use the SmolLM2 checkpoint (``smollm2_checkpoint``) are ``assets`` tests; blocks that
train or decode are also ``slow`` (one torch thread on 2 shared CPU cores: the two training
blocks take 10-40 s, the SmolLM2 blocks 5-20 s each).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT = README.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of every python block of README.md."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def _marks(code: str) -> list[pytest.MarkDecorator]:
    marks = []
    if "smollm2" in code:
        marks.append(pytest.mark.assets)
    if "smollm2" in code or ".train()" in code:
        marks.append(pytest.mark.slow)
    return marks


BLOCKS = python_blocks()


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize(
    "code",
    [pytest.param(code, id=f"README.md:{line}", marks=_marks(code)) for line, code in BLOCKS],
)
def test_readme_block_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compile(code, "README.md", "exec")  # a SyntaxError (e.g. '...' as an argument) fails here
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machines' cores are shared: one thread is fastest
    try:
        _run(code, {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)


def _run(code: str, namespace: dict[str, object]) -> None:
    """Execute one block with third-party warnings silenced."""
    with warnings.catch_warnings():
        # Third-party deprecation notices are not the README's to fix; errors are.
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), namespace)


def test_blocks_are_syntactically_valid_python() -> None:
    for line, code in BLOCKS:
        try:
            compile(code, f"README.md:{line}", "exec")
        except SyntaxError as exc:  # pragma: no cover - the failure message
            pytest.fail(f"README.md block at line {line}: {exc}")


def test_links_stay_inside_the_repository() -> None:
    """Relative links resolve to files of the repository (no '../' out of it)."""
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"^[a-z]+://", link):
            continue
        target = (ROOT / link.split("#")[0]).resolve()
        assert target.is_relative_to(ROOT), f"{link} points outside the repository"
        assert target.exists(), f"{link} does not exist"


def test_igd_equations_are_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    assert "](docs/igd.md)" in text
    doc = (ROOT / "docs" / "igd.md").read_text(encoding="utf-8")
    for needle in ("IG(", "IG~", "beta", "1 - alpha"):
        assert needle in doc


def test_setup_commands_say_where_to_run_them() -> None:
    text = README.read_text(encoding="utf-8")
    setup = text[text.index("## Set-up") : text.index("## The item trie")]
    assert setup.count("run from the repository root") >= 2
