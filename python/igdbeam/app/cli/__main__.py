"""``python -m igdbeam.app.cli``: the ``igdbeam`` command (used by ``accelerate launch -m``)."""

import sys

from igdbeam.app.cli.entry import main

sys.exit(main())
