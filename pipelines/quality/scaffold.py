"""Scaffold missing expectation suites from the contracts: `python -m pipelines.quality.scaffold [--overwrite]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.contracts import load_contracts
from pipelines.quality.suites import mart_privacy_suite, privacy_suite, quality_suite, write_suite
from pipelines.resources import CONTRACTS_DIR, EXPECTATIONS_DIR


def scaffold_marts(manifest_path: Path, out_dir: Path = EXPECTATIONS_DIR, *, overwrite: bool = False) -> list[Path]:
    """A privacy suite per approved mart, from its approval record and declared columns."""
    from pipelines.defs.marts import approved_marts
    from pipelines.governance.approvals import load_manifest

    manifest = load_manifest(manifest_path)
    written = []
    for mart, approval in approved_marts(manifest).items():
        node = next(n for n in manifest["nodes"].values() if n.get("resource_type") == "model" and n["name"] == mart)
        columns = {name: c.get("data_type") or "" for name, c in node.get("columns", {}).items()}
        path = write_suite(out_dir, mart_privacy_suite(mart, approval, columns), overwrite=overwrite)
        if path:
            written.append(path)
    return written


def scaffold(contracts_dir: Path = CONTRACTS_DIR, out_dir: Path = EXPECTATIONS_DIR, *, overwrite: bool = False) -> list[Path]:
    """Write a quality and a privacy suite per contract; existing (reviewed) suites are kept."""
    written = []
    for contract in load_contracts(contracts_dir):
        for suite in (quality_suite(contract), privacy_suite(contract)):
            path = write_suite(out_dir, suite, overwrite=overwrite)
            if path:
                written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--overwrite", action="store_true", help="replace reviewed suites (review the diff!)")
    args = parser.parse_args()
    from pipelines.defs.integration import dbt_project

    for path in scaffold(overwrite=args.overwrite) + scaffold_marts(dbt_project().manifest_path, overwrite=args.overwrite):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
