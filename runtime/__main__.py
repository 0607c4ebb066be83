"""`python -m netc`: the same as the `netc` command."""

import sys

from .cli import main

sys.exit(main())
