"""A department added by contract alone, whose participants' surnames are everyday words and place names (`Sales`,
`Black`, `White`, `Compton`, `Watts`...) honestly declared PERSON, runs through the whole Dagster job beside the demo
departments: every department passes, category values that equal a surname are kept, and nothing of the
participants reaches a de-identified table, a mart, metadata or a log line."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import duckdb
import pytest

from pipelines.quality.scaffold import scaffold
from pipelines.resources import CONTRACTS_DIR, EXPECTATIONS_DIR
from tests.conftest import PipelineRun, ground_truth, run_job

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "collisions"
LANDED = FIXTURES / "landing" / "outreach" / "participants_2025-01.csv"
DEPARTMENTS = (
    "hr_employees",
    "finance_expense_claims",
    "it_security_incidents",
    "support_tickets",
    "outreach_participants",
)


def participants() -> list[dict]:
    with LANDED.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def personal_values(person: dict) -> list[str]:
    """What must never be published of a participant: full names (both orders), email, phone, id."""
    first, last = person["first_name"], person["last_name"]
    return [
        f"{first} {last}",
        f"{last} {first}",
        f"{last}, {first}",
        person["email"],
        person["phone"],
        person["participant_id"],
    ]


@pytest.fixture(scope="module")
def outreach_run(tmp_path_factory, demo_landing, pipeline_env) -> PipelineRun:
    from pipelines.definitions import build_definitions

    root = tmp_path_factory.mktemp("outreach")
    contracts, suites, data_dir = root / "contracts", root / "expectations", root / "data"
    shutil.copytree(CONTRACTS_DIR, contracts)
    shutil.copy(FIXTURES / "contracts" / "outreach_participants.yaml", contracts)
    shutil.copytree(EXPECTATIONS_DIR, suites)
    written = scaffold(contracts, suites)  # a new department's suites are scaffolded from its contract
    assert {p.name for p in written} == {"outreach_participants.quality.json", "outreach_participants.privacy.json"}
    shutil.copytree(demo_landing, data_dir / "landing")
    (data_dir / "landing" / "outreach").mkdir()
    shutil.copy(LANDED, data_dir / "landing" / "outreach")
    defs = build_definitions(data_dir, contracts_dir=contracts, suites_dir=suites)
    result, instance = run_job(data_dir, defs=defs)
    return PipelineRun(data_dir, data_dir / "landing", result, instance)


def all_cells(db: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()]
        return "\n".join(str(row) for t in tables for row in con.execute(f'select * from "{t}"').fetchall())


def test_every_department_and_check_passes_beside_the_colliding_one(outreach_run):
    result = outreach_run.result
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    evaluations = result.get_asset_check_evaluations()
    assert all(e.passed for e in evaluations), [e.asset_key.to_user_string() for e in evaluations if not e.passed]
    materialized = {m.materialization.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert {f"deidentified_{d}" for d in DEPARTMENTS} <= materialized
    assert {"published_mart_org_unit_activity", "published_mart_support_satisfaction"} <= materialized


def test_category_values_equal_to_a_surname_are_kept(outreach_run):
    with duckdb.connect(str(outreach_run.data_dir / "deidentified.duckdb"), read_only=True) as con:
        org_units = {r[0] for r in con.execute("select distinct org_unit from hr_employees").fetchall()}
        races = {r[0] for r in con.execute("select distinct race from outreach_participants").fetchall()}
        rows = con.execute("select count(*) from outreach_participants").fetchone()[0]
        columns = {
            r[0]
            for r in con.execute(
                "select column_name from duckdb_columns() where table_name = 'outreach_participants'"
            ).fetchall()
        }
    surnames = {p["last_name"] for p in participants()}
    assert "Sales" in surnames and "Sales" in org_units  # HR's org unit, not a residual name
    assert {"Black", "White"} <= surnames and {"Black", "White"} <= races
    assert rows >= 0.8 * len(participants())  # the contract's max_suppression
    assert not {"first_name", "last_name", "phone", "participant_id"} & columns  # suppressed columns are dropped


def test_no_participant_value_in_any_table_mart_metadata_or_log(outreach_run):
    published = "\n".join(
        [
            all_cells(outreach_run.data_dir / "deidentified.duckdb"),
            all_cells(outreach_run.data_dir / "marts.duckdb"),
            outreach_run.metadata_text(),
            outreach_run.log_text(),
        ]
    )
    leaked = [p["participant_id"] for p in participants() if any(v in published for v in personal_values(p))]
    assert not leaked, f"{len(leaked)} participants' identifiers were published, e.g. ids {leaked[:3]}"
    demo_leaked = [g for g in ground_truth(outreach_run.landing) if g["value"] in published]
    assert not demo_leaked, (
        f"{len(demo_leaked)} demo values published, e.g. types {[g['entity_type'] for g in demo_leaked[:5]]}"
    )


def test_the_name_tokens_that_collided_are_recorded_as_counts(outreach_run):
    mats = {
        m.materialization.asset_key.to_user_string(): m.materialization
        for m in outreach_run.result.get_asset_materialization_events()
    }
    scan = mats["deidentified_hr_employees"].metadata["residual_scan"].value
    assert scan["passed"] and scan["known_identifiers"] > 0
    org_unit = scan["columns"]["org_unit"]
    assert org_unit["residual"] == {} and org_unit["name_tokens_without_evidence"] >= 1  # `Sales`: a count, no value
    race = mats["deidentified_outreach_participants"].metadata["residual_scan"].value["columns"]["race"]
    assert race["residual"] == {} and race["name_tokens_without_evidence"] >= 2  # Black, White
