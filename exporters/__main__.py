"""`python -m exporters` moved to `python -m harness.export` (commands live in harness/)."""

import sys

if __name__ == "__main__":
    print(
        "error: python -m exporters is now python -m harness.export (same flags)", file=sys.stderr
    )
    sys.exit(2)
