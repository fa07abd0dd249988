"""CLI: python -m bench --out BENCHMARKS.md [--sizes ...] [--pipeline-sizes ...] [--quick] [--sections 1,4] [--only lifecycle,dp]."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import SECTION_NAMES, run
from bench.sections import BenchConfig


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def section_list(text: str) -> tuple[int, ...]:
    values = int_list(text)
    if any(v not in SECTION_NAMES for v in values):
        raise argparse.ArgumentTypeError(f"sections are 1-{max(SECTION_NAMES)}")
    return tuple(sorted(set(values)))


def named_sections(text: str) -> tuple[int, ...]:
    """`lifecycle,dp` (section names, or numbers) -> section numbers."""
    by_name = {name.replace(" ", "-"): n for n, name in SECTION_NAMES.items()}
    out = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part.isdigit() and int(part) in SECTION_NAMES:
            out.append(int(part))
        elif part in by_name:
            out.append(by_name[part])
        else:
            raise argparse.ArgumentTypeError(f"unknown section {part!r}; names: {', '.join(by_name)}")
    return tuple(sorted(set(out)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path("BENCHMARKS.md"), help="markdown report (written after every section)"
    )
    parser.add_argument("--sizes", type=int_list, default=(10_000, 100_000), help="section 1 table sizes (rows)")
    parser.add_argument(
        "--pipeline-sizes",
        type=int_list,
        default=(10_000, 100_000, 1_000_000),
        help="section 5 generator --rows per run (rows per department)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke run (200-row table, few texts, 300-row pipeline)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sections",
        type=section_list,
        default=tuple(SECTION_NAMES),
        help="subset, e.g. 1,4 (rewrites the whole report)",
    )
    parser.add_argument(
        "--only",
        type=named_sections,
        default=None,
        help="run just these sections (names or numbers, e.g. lifecycle,dp) and splice them into the existing report",
    )
    parser.add_argument(
        "--lifecycle-rows", type=int_list, default=(100_000,), help="section 7: generator --rows per run"
    )
    parser.add_argument(
        "--dp-rows", type=int_list, default=(100_000, 1_000_000), help="section 8: synthetic person-level sizes"
    )
    parser.add_argument("--dp-repeats", type=int, default=50, help="section 8: releases per epsilon for the error")
    parser.add_argument(
        "--dataset",
        default="support_tickets",
        choices=("support_tickets", "finance_expense_claims", "it_security_incidents"),
    )
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=2000,
        help="per-cell/batch Presidio on larger tables: seeded sample of this many rows",
    )
    parser.add_argument("--texts", type=int, default=3000, help="section 2: texts per column")
    parser.add_argument("--pipeline-timeout", type=float, default=45.0, help="section 5: minutes per pipeline run")
    parser.add_argument("--repeats", type=int, default=3, help="runs for a median when one run is short")
    parser.add_argument("--no-profile", action="store_true", help="skip the section-1 profile")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where generated data goes (default: a temp dir, removed)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pipelines-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = BenchConfig(
        out=args.out.resolve(),
        workdir=workdir.resolve(),
        seed=args.seed,
        sizes=args.sizes,
        pipeline_sizes=args.pipeline_sizes,
        sections=args.sections,
        dataset=args.dataset,
        baseline_rows=args.baseline_rows,
        texts=args.texts,
        pipeline_timeout=args.pipeline_timeout * 60,
        repeats=args.repeats,
        profile=not args.no_profile,
        json_path=args.json,
        lifecycle_rows=args.lifecycle_rows,
        dp_rows=args.dp_rows,
        dp_repeats=args.dp_repeats,
    )
    if args.only:
        cfg.sections, cfg.splice = args.only, True
    if args.quick:
        cfg.sizes, cfg.pipeline_sizes, cfg.texts, cfg.text_sizes_base = (200,), (300,), 20, 200
        cfg.baseline_rows, cfg.eval_limit, cfg.risk_repeats, cfg.repeats = 50, 20, 1, 1
        cfg.pipeline_timeout = min(cfg.pipeline_timeout, 10 * 60)
        cfg.lifecycle_rows, cfg.dp_rows, cfg.dp_repeats = (2000,), (2000,), 5
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        run(cfg, argv)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
