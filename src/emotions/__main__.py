"""`python -m emotions` is the same as the `emotions` console script."""

import sys

from emotions.cli import main

sys.exit(main())
