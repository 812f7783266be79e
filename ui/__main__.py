"""`titan-ui`: placeholder until the UI issue lands."""

import sys


def main() -> None:
    print("titan-ui is not built yet (see the UI issue); use `titan status` and `titan logs -f`.", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
