"""``python -m convcore ...``: the same command line as ``convcore ...``."""
import sys

from convcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
