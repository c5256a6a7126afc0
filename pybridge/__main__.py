"""``python -m pybridge``: see :mod:`pybridge.cli`."""

from __future__ import annotations

import sys

from pybridge.cli import main

if __name__ == "__main__":
    sys.exit(main())
