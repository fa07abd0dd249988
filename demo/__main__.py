"""CLI: python -m demo --rows N --seed S --out DIR [--departments hr,finance,it,support]."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from demo.generator import DEPARTMENTS, MAX_ROWS, generate_files


def row_count(text: str) -> int:
    """argparse type: an integer in [1, MAX_ROWS]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_ROWS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_ROWS}, got {value}")
    return value


def seed_value(text: str) -> int:
    """argparse type: a non-negative integer seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def department_list(text: str) -> list[str]:
    """argparse type: comma-separated department names."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DEPARTMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(DEPARTMENTS)}, got {text!r}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--rows", type=row_count, required=True, help="employees (base row count), >= 1")
    parser.add_argument("--seed", type=seed_value, required=True, help="random seed; same seed, same bytes")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--departments",
        type=department_list,
        default=None,
        help=f"comma-separated subset of {','.join(DEPARTMENTS)} (default: all)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the files and print one line per file with its record count."""
    args = parse_args(argv)
    started = time.perf_counter()
    files = generate_files(args.out, args.rows, args.seed, args.departments)
    for f in files:
        unit = "lines" if f.path.suffix == ".jsonl" else "rows"
        print(f"{f.name:<24} {f.rows:>12,} {unit:<5} {f.path}")
    print(f"done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
