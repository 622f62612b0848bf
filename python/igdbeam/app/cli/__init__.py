"""The ``igdbeam`` command line: prepare, stats, train, recommend, evaluate and demo.

Run ``igdbeam <command> --help`` for every option. Every number is checked when the arguments
are parsed, and every output path before any long work. Errors in the inputs (missing files,
wrong columns, empty histories, unreachable assets, unwritable outputs) end with one
``igdbeam: error: ...`` line and exit status 2; outputs are written atomically, so a failed run
leaves no half-written file and an earlier output intact. ``--overwrite`` replaces only what
igdbeam wrote (folders carry a ``.igdbeam-output`` marker). SIGINT / SIGTERM clean up and end
with one ``igdbeam: interrupted`` line and exit status 130 / 143.

The package: :mod:`.entry` (``main``), :mod:`.parser` (``build_parser``), :mod:`.arg_types`
(checked numbers), :mod:`.options` (shared option groups), :mod:`.out_checks` (output checks),
:mod:`.loading` (data, model and trie of a run) and one module per command group:
:mod:`.prepare`, :mod:`.stats`, :mod:`.train`, :mod:`.recommend` (recommend and evaluate),
:mod:`.demo`, :mod:`.experiment`.
"""

from igdbeam.app.cli.entry import COMMANDS, Interrupted, main
from igdbeam.app.cli.parser import build_parser
from igdbeam.app.cli.recommend import EVALUATE_COLUMNS

__all__ = ["COMMANDS", "EVALUATE_COLUMNS", "Interrupted", "build_parser", "main"]
