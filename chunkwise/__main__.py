"""`python -m chunkwise`: the same as the `chunkwise` command."""

import sys

from chunkwise.cli import main

sys.exit(main())
