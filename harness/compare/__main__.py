"""`python -m harness.compare A B`."""

import sys

from harness.compare.cli import main

sys.exit(main())
