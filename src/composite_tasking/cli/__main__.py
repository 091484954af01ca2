"""``python -m composite_tasking.cli``: the ``ctn`` command."""

import sys

from . import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
