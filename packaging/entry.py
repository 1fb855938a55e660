"""PyInstaller entry point of the one-file `k3py` binary: the same `k3py.cli.main` as the
console script and `python -m k3py`."""

import sys

from k3py.cli import main

if __name__ == "__main__":
    sys.exit(main())
