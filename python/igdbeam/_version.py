"""The package version, on the lowest floor so that any module can read it (``igdbeam.io``
writes it into output markers) without importing the public facade ``igdbeam/__init__.py``.

Keep it equal to ``[project] version`` in ``pyproject.toml``.
"""

__version__ = "0.1.0"
