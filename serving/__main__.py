"""`python -m serving [flags]`: the same as `assistant serve [flags]`."""

import sys

from assistant.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
