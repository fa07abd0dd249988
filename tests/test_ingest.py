"""Ingestion unit checks not covered by the end-to-end bad-input tests."""

import os
import time

import duckdb
import pytest

from pipelines.contracts import load_contracts
from pipelines.ingest import IngestError, ingest_file

HR = next(c for c in load_contracts() if c.dataset == "hr_employees")


def test_stale_file_rejected_when_contract_sets_freshness(tmp_path):
    contract = HR.model_copy(update={"quality": HR.quality.model_copy(update={"max_age_days": 7})})
    path = tmp_path / "employees_old.csv"
    path.write_text(",".join(c.name for c in HR.columns) + "\n")
    old = time.time() - 30 * 86400
    os.utime(path, (old, old))
    with duckdb.connect() as con, pytest.raises(IngestError, match="30 days ago") as err:
        ingest_file(path, contract, con, "t")
    assert err.value.problem == "stale"
