"""Generated data for the benchmark, prepared exactly as the pipeline prepares it (ingest, known identifiers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from bench.common import BENCH_KEY, RUN_DATE, timed
from demo.generator import SPECS, dataset_rows, generate
from pipelines.contracts import Contract, load_contracts
from pipelines.ingest import SOURCE_FILE_COLUMN, ingest_file, newest_landed_file, quote_ident
from pipelines.privacy.keys import SecretKey, fingerprint
from pipelines.privacy.known import KnownIdentifiers, known_identifiers_from_raw
from pipelines.privacy.operators import OperatorContext
from pipelines.resources import CONTRACTS_DIR


def department_of(dataset: str) -> str:
    return next(d for d, spec in SPECS.items() if spec.name == dataset)


def base_rows_for(dataset: str, rows: int) -> int:
    """Generator `--rows` giving `dataset` at least `rows` rows (finance has 2 claims per employee, IT 1 per 2)."""
    n = rows
    while dataset_rows(department_of(dataset), n) < rows:
        n += max(1, rows - dataset_rows(department_of(dataset), n))
    return n


def bench_context() -> OperatorContext:
    """Operator context with the bench's fixed key (never a real key) and a fixed run date."""
    secret = BENCH_KEY.encode("utf-8")
    key = SecretKey(secret=secret, key_id=fingerprint(secret), source="bench")
    return OperatorContext(pseudonym_key=key, run_date=RUN_DATE, hierarchies_dir=CONTRACTS_DIR / "hierarchies")


@dataclass
class Prepared:
    """One generated landing directory, ingested into an in-memory raw database."""

    landing: Path
    base_rows: int
    contracts: list[Contract]
    con: duckdb.DuckDBPyConnection
    known: KnownIdentifiers
    seconds: dict[str, float] = field(default_factory=dict)

    def contract(self, dataset: str) -> Contract:
        return next(c for c in self.contracts if c.dataset == dataset)

    def frame(self, dataset: str) -> pd.DataFrame:
        """The raw table as the de-identification asset reads it."""
        return self.con.execute(f"SELECT * EXCLUDE ({SOURCE_FILE_COLUMN}) FROM {quote_ident(dataset)}").df()

    def rebuild_known(self) -> float:
        t = timed(lambda: known_identifiers_from_raw(self.con, self.contracts))
        self.known = t.value
        return t.seconds


def prepare(workdir: Path, base_rows: int, seed: int) -> Prepared:
    """Generate every department (known identifiers span departments), ingest each file, index identifiers."""
    landing = workdir / f"landing_{base_rows}_{seed}"
    seconds: dict[str, float] = {}
    if not (landing / ".generated").exists():
        seconds["generate"] = timed(lambda: generate(landing, rows=base_rows, seed=seed)).seconds
        (landing / ".generated").touch()
    contracts = load_contracts()
    con = duckdb.connect()

    def ingest_all() -> None:
        for contract in contracts:
            path = newest_landed_file(landing, contract)
            if path is not None:
                ingest_file(path, contract, con, contract.dataset)

    seconds["ingest"] = timed(ingest_all).seconds
    known_t = timed(lambda: known_identifiers_from_raw(con, contracts))
    seconds["known_identifiers"] = known_t.seconds
    return Prepared(landing, base_rows, contracts, con, known_t.value, seconds)
