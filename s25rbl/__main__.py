"""``python -m s25rbl``: the same as the ``s25rbl`` command."""

import sys

from s25rbl.cli import main

sys.exit(main())
