"""``python -m vaultfs.cli``: the same command as the ``vaultfs`` console script."""

import sys

from vaultfs.cli import main

if __name__ == "__main__":
    sys.exit(main())
