"""``python -m data_modules.annotate``: runs :func:`data_modules.annotate.cli.main`."""

import sys

from data_modules.annotate.cli import main

if __name__ == "__main__":  # not when a spawned worker re-imports the main module
    sys.exit(main())
