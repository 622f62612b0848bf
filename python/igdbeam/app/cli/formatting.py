"""The help formatter of every ``igdbeam`` (sub)command: each default shown once, and only where
it says something."""

from __future__ import annotations

import argparse
import re

_STATES_DEFAULT = re.compile(r"\(default[:\s]")


class HelpFormatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to an option's help, except where it would be noise: no default
    (``None``), a flag (``store_true``), a required option, a suppressed default, or a help text
    that already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "%(default)" in text
            or action.default is None
            or action.default is argparse.SUPPRESS
            or isinstance(action.default, bool)
            or action.required
            or not action.option_strings
            or _STATES_DEFAULT.search(text)
        ):
            return text
        return text + " (default: %(default)s)"


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the description's and epilog's line breaks."""
