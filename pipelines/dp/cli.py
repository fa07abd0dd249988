"""`python -m pipelines dp ...`: ask an approved DP view, see budgets, verify the ledger.

    dp query --consumer NAME --approval MART --epsilon E [--delta D] [--purpose TEXT] [--json] "SQL or spec"
    dp budget --approval MART [--consumer NAME]
    dp verify

Exit status: 0 answered, 3 refused by the budget, 4 refused by the approval, 2 usage or ledger problems.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipelines.dp import budget as budgets
from pipelines.dp.query import QueryRefused, approval_of, ask
from pipelines.dp.release import ReleaseError
from pipelines.resources import DBT_PROJECT_DIR, default_data_dir

DEFAULT_MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines dp", description="Differentially private access to approved marts."
    )
    parser.add_argument("--data-dir", type=Path, help="default: $PIPELINES_DATA_DIR or data/")
    parser.add_argument(
        "--manifest", type=Path, default=DEFAULT_MANIFEST, help="the dbt manifest holding the approvals"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("query", help="answer a DP question, charged to the consumer's budget")
    q.add_argument("--consumer", required=True, help="analyst, team or partner the budget belongs to")
    q.add_argument("--approval", required=True, help="the approved mart (its dp_release governs the question)")
    q.add_argument("--epsilon", required=True, type=float)
    q.add_argument("--delta", type=float, help="default: the approval's dp_release.delta")
    q.add_argument("--purpose", default="", help="why (recorded in the ledger)")
    q.add_argument("--json", action="store_true", help="print the answer and its cost as JSON")
    q.add_argument(
        "question", help="SQL (SELECT g, count(*), sum(c) FROM MART GROUP BY g) or a spec ('count, sum(c) by g')"
    )
    b = sub.add_parser("budget", help="spent and remaining budget per consumer in the current period")
    b.add_argument("--approval", required=True)
    b.add_argument("--consumer")
    sub.add_parser("verify", help="verify the ledger's chain")
    return parser


def _print_answer(outcome: budgets.Outcome, as_json: bool) -> None:
    cost = {
        "cached": outcome.cached,
        "ledger_seq": outcome.record["seq"],
        "spent_epsilon": round(outcome.spent[0], 9),
        "remaining_epsilon": round(outcome.remaining[0], 9),
        "spent_delta": outcome.spent[1],
        "remaining_delta": outcome.remaining[1],
    }
    if as_json:
        print(json.dumps({"answer": outcome.table.to_dicts(), "cost": cost}, default=str))
        return
    import polars as pl

    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        print(outcome.table)
    print("values are noisy (OpenDP); _lower/_upper: 95% accuracy interval; groups too small to release are absent")
    note = "served from cache: nothing spent" if outcome.cached else "charged"
    print(
        f"{note}; spent epsilon {cost['spent_epsilon']:g}, remaining {cost['remaining_epsilon']:g} this period (ledger seq {cost['ledger_seq']})"
    )


def _query(args: argparse.Namespace, data_dir: Path) -> int:
    try:
        outcome = ask(
            data_dir,
            args.manifest,
            args.approval,
            args.question,
            consumer=args.consumer,
            epsilon=args.epsilon,
            delta=args.delta,
            purpose=args.purpose,
        )
    except budgets.BudgetExceeded as exc:
        print(exc, file=sys.stderr)
        return 3
    except (QueryRefused, ReleaseError) as exc:
        print(f"refused: {exc}; nothing was released or charged", file=sys.stderr)
        return 4
    except budgets.LedgerBroken as exc:
        print(exc, file=sys.stderr)
        return 2
    _print_answer(outcome, args.json)
    return 0


def _budget(args: argparse.Namespace, data_dir: Path) -> int:
    try:
        approval = approval_of(args.manifest, args.approval)
    except QueryRefused as exc:
        print(exc, file=sys.stderr)
        return 4
    if approval.dp_release is None:
        print(f"{args.approval} has no dp_release", file=sys.stderr)
        return 4
    rows: dict[str, Any] = budgets.summary(budgets.Ledger(data_dir), args.approval, approval.dp_release)
    if args.consumer:
        rows = {args.consumer: rows.get(args.consumer, "no budget")}
    print(json.dumps(rows, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one dp subcommand."""
    args = _parser().parse_args(argv)
    data_dir = (args.data_dir or default_data_dir()).resolve()
    if args.command != "verify" and not Path(args.manifest).exists():
        print(f"no dbt manifest at {args.manifest}; run `make manifest` (or give --manifest)", file=sys.stderr)
        return 2
    if args.command == "query":
        return _query(args, data_dir)
    if args.command == "budget":
        return _budget(args, data_dir)
    from pipelines import audit

    ok, message = audit.verify(budgets.Ledger(data_dir).path)
    print(f"{'ok' if ok else 'FAIL'}  {budgets.LEDGER_LOG}: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
