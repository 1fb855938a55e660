"""`python -m k3py`: the same entry point as the `k3py` executable."""

import sys

from k3py.cli import main

if __name__ == "__main__":
    sys.exit(main())
