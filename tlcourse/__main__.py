"""``python -m tlcourse``: the same as the ``tlcourse`` command."""

import sys

from .cli import main

sys.exit(main())
