"""Scaffold expectation suites from the contracts and check reviewed ones against them.

`python -m pipelines.quality.scaffold` writes missing suites; `--overwrite` regenerates every suite from its
contract (or approval), keeping reviewers' notes; `--check` lists every disagreement and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipelines.contracts import load_contracts
from pipelines.quality.suites import (
    mart_privacy_suite,
    mart_suite_drift,
    privacy_suite,
    quality_suite,
    suite_drift,
    suite_path,
    write_suite,
)
from pipelines.resources import CONTRACTS_DIR, EXPECTATIONS_DIR


def _mart_declarations(manifest_path: Path) -> list[tuple[str, Any, dict[str, str]]]:
    """(mart, approval, declared column types) for every approved mart of a dbt manifest."""
    from pipelines.defs.marts import approved_marts
    from pipelines.governance.approvals import load_manifest

    manifest = load_manifest(manifest_path)
    out = []
    for mart, approval in approved_marts(manifest).items():
        node = next(n for n in manifest["nodes"].values() if n.get("resource_type") == "model" and n["name"] == mart)
        out.append((mart, approval, {name: c.get("data_type") or "" for name, c in node.get("columns", {}).items()}))
    return out


def scaffold_marts(manifest_path: Path, out_dir: Path = EXPECTATIONS_DIR, *, overwrite: bool = False) -> list[Path]:
    """A privacy suite per approved mart, from its approval record and declared columns."""
    written = []
    for mart, approval, columns in _mart_declarations(manifest_path):
        path = write_suite(out_dir, mart_privacy_suite(mart, approval, columns), overwrite=overwrite)
        if path:
            written.append(path)
    return written


def scaffold(
    contracts_dir: Path = CONTRACTS_DIR, out_dir: Path = EXPECTATIONS_DIR, *, overwrite: bool = False
) -> list[Path]:
    """Write a quality and a privacy suite per contract; existing (reviewed) suites are kept unless overwritten."""
    written = []
    for contract in load_contracts(contracts_dir):
        for suite in (quality_suite(contract), privacy_suite(contract)):
            path = write_suite(out_dir, suite, overwrite=overwrite)
            if path:
                written.append(path)
    return written


def _reviewed(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = suite_path(out_dir, name)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _missing(name: str) -> str:
    return f"{name}: the suite file {name}.json is missing; scaffold it with: python -m pipelines.quality.scaffold"


def check(contracts_dir: Path = CONTRACTS_DIR, out_dir: Path = EXPECTATIONS_DIR) -> list[str]:
    """Every disagreement between the contracts and their reviewed suites in `out_dir` (empty: none)."""
    drift = []
    for contract in load_contracts(contracts_dir):
        for name in (f"{contract.dataset}.quality", f"{contract.dataset}.privacy"):
            suite = _reviewed(out_dir, name)
            drift += [_missing(name)] if suite is None else suite_drift(contract, suite)
    return drift


def check_marts(manifest_path: Path, out_dir: Path = EXPECTATIONS_DIR) -> list[str]:
    """Every disagreement between the approved marts of a manifest and their reviewed privacy suites."""
    drift = []
    for mart, approval, columns in _mart_declarations(manifest_path):
        suite = _reviewed(out_dir, f"{mart}.privacy")
        drift += [_missing(f"{mart}.privacy")] if suite is None else mart_suite_drift(mart, approval, columns, suite)
    return drift


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--overwrite", action="store_true", help="regenerate reviewed suites, keeping their notes (review the diff!)"
    )
    mode.add_argument(
        "--check", action="store_true", help="list disagreements between suites and contracts; exit 1 if any"
    )
    parser.add_argument("--no-marts", action="store_true", help="only the departments' suites (needs no dbt manifest)")
    parser.add_argument("--contracts", type=Path, default=CONTRACTS_DIR, help="contracts directory")
    parser.add_argument("--expectations", type=Path, default=EXPECTATIONS_DIR, help="suites directory")
    args = parser.parse_args(argv)
    manifest = None if args.no_marts else _manifest_path()
    if args.check:
        drift = check(args.contracts, args.expectations) + (
            check_marts(manifest, args.expectations) if manifest else []
        )
        for line in drift:
            print(line)
        print(
            f"{len(drift)} disagreement(s) between suites and contracts"
            if drift
            else "suites agree with their contracts"
        )
        return 1 if drift else 0
    written = scaffold(args.contracts, args.expectations, overwrite=args.overwrite)
    written += scaffold_marts(manifest, args.expectations, overwrite=args.overwrite) if manifest else []
    for path in written:
        print(f"wrote {path}")
    return 0


def _manifest_path() -> Path:
    """The dbt project's manifest (parsed once if missing)."""
    from pipelines.defs.integration import dbt_project

    return dbt_project().manifest_path


if __name__ == "__main__":
    sys.exit(main())
