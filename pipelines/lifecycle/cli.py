"""`python -m pipelines requests add|status|list` and `python -m pipelines retention purge`.

    python -m pipelines requests add --kind erasure --identifier-type EMAIL_ADDRESS --value - \\
        --reason "GDPR art. 17 request of 2026-12-01" --requested-by "dpo@example-corp.com" < value.txt
    python -m pipelines requests status sr-0123456789
    python -m pipelines retention purge [--now 2026-12-03] [--confirm] [--no-wait]

`--value -` reads the identifier from standard input, so it stays out of shell history and the process list. Nothing
this command prints or stores holds the identifier: the store keeps its keyed hash.
"""

import argparse
import json
import sys
import uuid
from pathlib import Path

from pipelines.contracts import load_contracts
from pipelines.lifecycle import requests as store
from pipelines.lifecycle.retention import CONFIRM_TAG, NOW_TAG, parse_now
from pipelines.resources import CONTRACTS_DIR, PipelineStorage, PrivacySettings, default_data_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description="Data subjects' requests and retention.")
    commands = parser.add_subparsers(dest="command", required=True)
    requests = commands.add_parser("requests", help="opt-out and erasure requests").add_subparsers(
        dest="action", required=True
    )
    add = requests.add_parser("add", help="record a request (the sensor subject_requests_sensor applies it)")
    add.add_argument("--kind", choices=store.KINDS, required=True)
    add.add_argument(
        "--identifier-type",
        required=True,
        help="an entity a contract declares: EMAIL_ADDRESS, EMPLOYEE_ID, US_SSN, ...",
    )
    add.add_argument("--value", required=True, help="the identifier, or - to read it from standard input")
    add.add_argument("--reason", required=True)
    add.add_argument("--requested-by", required=True)
    status = requests.add_parser("status", help="where a request stands")
    status.add_argument("request_id")
    requests.add_parser("list", help="every request and its state")
    retention = commands.add_parser("retention", help="retention").add_subparsers(dest="action", required=True)
    purge = retention.add_parser("purge", help="queue the retention_purge job and wait for it")
    purge.add_argument("--now", help="the date the horizon is counted back from (default: now)")
    purge.add_argument(
        "--confirm",
        action="store_true",
        help="purge even where that removes more than half of a dataset at once (held otherwise)",
    )
    purge.add_argument("--no-wait", action="store_true")
    for sub in (add, status, purge):
        sub.add_argument("--data-dir", type=Path, default=None, help="default: $PIPELINES_DATA_DIR or data/")
    return parser


def _paths(data_dir: Path | None) -> store.Paths:
    return store.Paths.under((data_dir or default_data_dir()).resolve())


def _add(args) -> int:
    value = sys.stdin.readline().rstrip("\n") if args.value == "-" else args.value
    data_dir = (args.data_dir or default_data_dir()).resolve()
    key = PrivacySettings().pseudonym_key(PipelineStorage(data_dir=str(data_dir)))  # as the pipeline finds it
    try:
        rid, created = store.add(
            store.Paths.under(data_dir),
            key,
            load_contracts(CONTRACTS_DIR),
            kind=args.kind,
            identifier_type=args.identifier_type,
            value=value,
            reason=args.reason,
            requested_by=args.requested_by,
        )
    except store.RequestError as error:
        print(f"not recorded: {error}", file=sys.stderr)
        return 2
    print(
        f"{'recorded' if created else 'already recorded'}: {rid} ({args.kind}); subject_requests_sensor will apply it. "
        f"Follow it with: python -m pipelines requests status {rid}"
    )
    return 0


def _status(args) -> int:
    request = store.load(_paths(args.data_dir)).get(args.request_id)
    if request is None:
        print(f"no request {args.request_id}", file=sys.stderr)
        return 1
    print(json.dumps(store.status(request), indent=2))
    return 0


def _list(args) -> int:
    for request in store.active(_paths(getattr(args, "data_dir", None))):
        s = store.status(request)
        print(f"{s['id']}  {s['kind']:<8} {s['recorded_at']}  {s['state']}")
    return 0


def _purge(args) -> int:
    import dagster as dg

    from pipelines import cli
    from pipelines.lifecycle.assets import RETENTION_JOB

    data_dir = (args.data_dir or default_data_dir()).resolve()
    now = parse_now(args.now)
    import os

    os.environ["PIPELINES_DATA_DIR"] = str(data_dir)
    home = cli.instance_home(data_dir)
    with dg.DagsterInstance.get() as instance:
        run_id = str(uuid.uuid4())
        tags = {"pipelines/started_by": "cli", NOW_TAG: now.isoformat(), **({CONFIRM_TAG: "1"} if args.confirm else {})}
        cli.submit(RETENTION_JOB, run_id, tags)
        print(f"Queued run {run_id} of {RETENTION_JOB} (horizons counted back from {now.date()}).", flush=True)
        if args.no_wait:
            return 0
        with cli.local_daemon(home, cli.WORKSPACE, instance) as daemon:
            finished = cli.wait_for(instance, run_id, daemon)
        success = finished.status == dg.DagsterRunStatus.SUCCESS
        cli.print_summary(cli.summarize(cli.run_events(instance, run_id)), run_id, success)
        return 0 if success else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        ("requests", "add"): _add,
        ("requests", "status"): _status,
        ("requests", "list"): _list,
        ("retention", "purge"): _purge,
    }
    return handlers[(args.command, args.action)](args)


if __name__ == "__main__":
    sys.exit(main())
