"""Privacy over time, end to end on real components: opt-out, erasure, a request matching nobody, a rerun, retention.

One small demo (500 base rows) goes through integrate_all once; requests are then applied the way the sensor does it
(its own evaluation, its run requests executed on the same instance), and retention runs with an injected "now".
"""

import csv
import json
import shutil
from datetime import UTC
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines import audit
from pipelines.contracts import load_contracts
from pipelines.lifecycle import requests as store
from pipelines.lifecycle.assets import REQUESTS_JOB, RETENTION_JOB
from pipelines.lifecycle.cli import main as lifecycle_cli
from pipelines.lifecycle.inplace import APPLIED_METADATA, FULL_REBUILD_TAG
from pipelines.lifecycle.retention import NOW_TAG
from pipelines.privacy.keys import SecretKey, fingerprint
from pipelines.privacy.operators import pseudonym
from tests.conftest import TEST_KEY

ROWS, SEED = 500, 5
DATASETS = ("finance_expense_claims", "hr_employees", "it_security_incidents", "support_tickets")
MARTS = ("mart_org_unit_activity", "mart_support_satisfaction")


class World:
    """A data directory, its definitions and one Dagster instance shared by every run of the module."""

    def __init__(self, data_dir: Path, dbt_dir: Path):
        from pipelines.definitions import build_definitions

        self.data_dir = data_dir
        self.defs = build_definitions(data_dir, dbt_project_dir=dbt_dir)
        self.instance = dg.DagsterInstance.ephemeral()
        self.paths = store.Paths.under(data_dir)

    def run(self, job: str, asset_selection=None, tags=None) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, asset_selection=asset_selection, tags=tags or {}
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        return result

    def sensor_tick(self) -> list[dg.RunRequest]:
        """One evaluation of subject_requests_sensor, with the definitions' own resources."""
        sensor = self.defs.get_sensor_def("subject_requests_sensor")
        repo = self.defs.get_repository_def()
        resources = {k: v for k, v in repo.get_top_level_resources().items() if k in ("storage", "privacy")}
        with dg.build_sensor_context(instance=self.instance, repository_def=repo, resources=resources) as context:
            result = sensor(context)
        return [] if isinstance(result, dg.SkipReason) else list(result)

    def apply_requests(self) -> list[dg.ExecuteInProcessResult]:
        """What the daemon does with the sensor's run requests: each through the requests job, until none is left."""
        results = []
        for _ in range(3):
            runs = self.sensor_tick()
            if not runs:
                break
            for request in runs:
                results.append(self.run(REQUESTS_JOB, asset_selection=request.asset_selection, tags=request.tags))
        return results

    def query(self, db: str, sql: str, params=None):
        with duckdb.connect(str(self.data_dir / db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def all_text(self, db: str, tables) -> str:
        return "\n".join(str(row) for t in tables for row in self.query(db, f"SELECT * FROM {t}"))


def key() -> SecretKey:
    secret = TEST_KEY.encode()
    return SecretKey(fingerprint(secret), "test", secret)


@pytest.fixture(scope="module")
def world(tmp_path_factory, pipeline_env) -> World:
    from demo.generator import generate

    data_dir = tmp_path_factory.mktemp("lifecycle") / "data"
    generate(data_dir / "landing", rows=ROWS, seed=SEED)
    shutil.rmtree(data_dir / "landing" / "_ground_truth")
    w = World(data_dir, committed_dbt_project(data_dir.parent))
    w.baseline = w.run("integrate_all")
    return w


def committed_dbt_project(where: Path) -> Path:
    """The committed dbt project (others may be adding models to the working copy while this runs), parsed afresh."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "HEAD", "dbt_project"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where / "dbt_project"


def pick_employee(w: World, exclude=()) -> dict:
    """An employee with claims and incidents who is in the de-identified HR table (not withheld for k)."""
    rows = w.query(
        "raw.duckdb",
        """
        SELECT e.employee_id, e.email, e.full_name FROM hr_employees e
        WHERE e.employee_id IN (SELECT employee_id FROM finance_expense_claims)
          AND e.email IN (SELECT reporter_email FROM it_security_incidents) ORDER BY e.employee_id""",
    )
    published = {r[0] for r in w.query("deidentified.duckdb", "SELECT employee_id FROM hr_employees")}
    for employee_id, email, name in rows:
        if employee_id not in exclude and pseudonym(key().secret, "EMPLOYEE_ID", employee_id) in published:
            return {"employee_id": employee_id, "email": email, "name": name}
    raise AssertionError("no suitable employee in the demo")


def pseudonyms_of(person: dict) -> list[str]:
    s = key().secret
    return [
        pseudonym(s, "EMPLOYEE_ID", person["employee_id"]),
        pseudonym(s, "EMAIL_ADDRESS", person["email"]),
        pseudonym(s, "PERSON", person["name"]),
    ]


def expected_hr_rows(w: World, excluded_ids: list[str]) -> int:
    """What de-identifying HR without these employees gives (k-anonymity may withhold a different number of others)."""
    from pipelines.privacy.deidentify import deidentify_table
    from pipelines.privacy.operators import OperatorContext
    from pipelines.resources import CONTRACTS_DIR

    contract = next(c for c in load_contracts() if c.dataset == "hr_employees")
    ctx = OperatorContext(
        pseudonym_key=key(), run_date=__import__("datetime").date.today(), hierarchies_dir=CONTRACTS_DIR / "hierarchies"
    )
    with duckdb.connect() as con, duckdb.connect() as target:
        con.execute(f"ATTACH '{w.data_dir / 'raw.duckdb'}' AS r (READ_ONLY)")
        con.execute(
            "CREATE TABLE src AS SELECT * EXCLUDE (_source_file, _subject_request) FROM r.hr_employees WHERE NOT list_contains(?, employee_id)",
            [excluded_ids],
        )
        con.execute("DETACH r")
        return deidentify_table(con, "src", target, "out", contract, ctx).rows_out


def mart_group(w: World, person: dict) -> tuple[str, str]:
    eid = pseudonym(key().secret, "EMPLOYEE_ID", person["employee_id"])
    return w.query("deidentified.duckdb", "SELECT org_unit, job_title FROM hr_employees WHERE employee_id = ?", [eid])[
        0
    ]


def headcount(w: World, group: tuple[str, str]) -> int | None:
    rows = w.query(
        "marts.duckdb",
        "SELECT headcount FROM mart_org_unit_activity WHERE org_unit = ? AND job_family = ?",
        list(group),
    )
    return rows[0][0] if rows else None


def check_evaluations(results, name: str) -> list:
    return [e for r in results for e in r.get_asset_check_evaluations() if e.check_name == name]


def add_request(w: World, kind: str, value: str, capsys) -> str:
    """Through the command line, the value on standard input."""
    import io
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(value + "\n")
    try:
        assert (
            lifecycle_cli(
                [
                    "requests",
                    "add",
                    "--kind",
                    kind,
                    "--identifier-type",
                    "EMAIL_ADDRESS",
                    "--value",
                    "-",
                    "--reason",
                    "test",
                    "--requested-by",
                    "dpo@example-corp.com",
                    "--data-dir",
                    str(w.data_dir),
                ]
            )
            == 0
        )
    finally:
        sys.stdin = old
    out = capsys.readouterr().out
    assert value not in out
    return out.split("recorded: ")[1].split(" ")[0]


# --- the tests, in order: each builds on the state the previous one left ---------------------------------------


def application(result: dg.ExecuteInProcessResult, dataset: str) -> dict:
    """How a run's materialization of a de-identified table applied the requests (in place or rebuilt, and why)."""
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == f"deidentified_{dataset}"
    ]
    return event.materialization.metadata[APPLIED_METADATA].value


def test_opt_out_removes_the_person_from_every_de_identified_table_and_mart(world, capsys, monkeypatch):
    import pipelines.privacy.deidentify as deidentify
    from pipelines.engines.tables import DuckDBTables

    assert application(world.baseline, "hr_employees") == {
        "mode": "full rebuild",
        "reason": "no previous de-identified table",
        "requests": [],
        "free_text_scanned": True,
    }
    scans = []  # every call that would de-identify (and scan the free text of) a table again
    # a department's step de-identifies through its engine (pipelines/engines/tables.py)
    for module, name in ((DuckDBTables, "deidentify"), (deidentify, "scan_text_column")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **kw: scans.append(_n) or _f(*a, **kw))
    person = pick_employee(world)
    world.opted_out = person
    before_hr = world.query("deidentified.duckdb", "SELECT count(*) FROM hr_employees")[0][0]
    group = mart_group(world, person)
    before_headcount = headcount(world, group)
    expected = expected_hr_rows(world, [person["employee_id"]])

    rid = add_request(world, "opt-out", person["email"], capsys)
    assert (
        person["email"] not in world.paths.store.read_text()
        and oct(world.paths.store.stat().st_mode & 0o777) == "0o600"
    )
    assert store.status(store.load(world.paths)[rid])["state"].startswith("pending")
    results = world.apply_requests()
    assert len(results) == 2  # the sensor's two runs: resolve, then rebuild only what holds the person

    rebuilt = {e.asset_key.to_user_string() for e in results[1].get_asset_materialization_events()}
    assert "deidentified_hr_employees" in rebuilt and "raw_hr_employees" not in rebuilt
    # applied in place: rows deleted in SQL, nothing de-identified or scanned again
    world.opt_out_run = results[1]
    assert scans == []
    for ds in ("hr_employees", "finance_expense_claims", "it_security_incidents"):
        applied = application(results[1], ds)
        assert applied["mode"] == "applied in place" and applied["requests"] == [rid], applied
        assert applied["free_text_scanned"] is False and applied["rows_removed"] >= 1, applied
    after_hr = world.query("deidentified.duckdb", "SELECT count(*) FROM hr_employees")[0][0]
    assert after_hr == expected, (before_hr, expected, after_hr)
    if expected == before_hr - 1:
        assert after_hr == before_hr - 1
    # no mart row counts them: their group's headcount is that of the de-identified table without them (k-anonymity
    # may withhold others too), or the group is withheld below its minimum size
    remaining = world.query(
        "deidentified.duckdb",
        "SELECT count(DISTINCT employee_id) FROM hr_employees WHERE org_unit = ? AND job_title = ?",
        list(group),
    )[0][0]
    after_headcount = headcount(world, group)
    assert after_headcount == remaining if remaining >= 5 else after_headcount is None
    assert before_headcount is not None
    # their pseudonyms appear nowhere downstream; raw keeps their row, flagged
    text = world.all_text("deidentified.duckdb", DATASETS) + world.all_text("marts.duckdb", MARTS)
    assert not [p for p in pseudonyms_of(person) if p in text]
    assert world.query(
        "raw.duckdb", "SELECT _subject_request FROM hr_employees WHERE email = ?", [person["email"]]
    ) == [(rid,)]
    absence = check_evaluations(results, "subject_absence")
    assert absence and all(e.passed for e in absence)
    assert {e.asset_key.to_user_string() for e in absence} >= {
        "deidentified_hr_employees",
        "mart_org_unit_activity",
        "published_mart_org_unit_activity",
    }
    ok, message = audit.verify(world.data_dir / "audit" / "pipeline.jsonl", anchors=audit.all_anchors(world.instance))
    assert ok, message
    log = (world.data_dir / "audit" / "pipeline.jsonl").read_text()
    assert rid in log and person["email"] not in log and person["employee_id"] not in log
    status = store.status(store.load(world.paths)[rid])
    assert status["state"].startswith("applied in run") and "deidentified_hr_employees" in status["proven_absent_in"]
    assert lifecycle_cli(["requests", "status", rid, "--data-dir", str(world.data_dir)]) == 0
    assert person["email"] not in capsys.readouterr().out


def snapshot(w: World) -> dict[str, list]:
    """Every de-identified table and mart, rows sorted (a table's order is not part of what it says)."""
    tables = {f"deidentified.{t}": w.query("deidentified.duckdb", f"SELECT * FROM {t}") for t in DATASETS}
    tables |= {f"marts.{t}": w.query("marts.duckdb", f"SELECT * FROM {t}") for t in MARTS}
    return {name: sorted(rows, key=repr) for name, rows in tables.items()}


def test_in_place_gives_what_a_full_rebuild_gives(world):
    """The same request on the same data and key, applied by de-identifying every row again: the same tables."""
    opt_out = world.opt_out_run
    in_place = snapshot(world)
    rebuild = world.run(
        REQUESTS_JOB,
        asset_selection=sorted(opt_out.dagster_run.asset_selection),
        tags={FULL_REBUILD_TAG: "1"},
    )
    applied = application(rebuild, "hr_employees")
    assert applied["mode"] == "full rebuild" and FULL_REBUILD_TAG in applied["reason"] and applied["free_text_scanned"]
    full = snapshot(world)
    assert set(full) == set(in_place)
    for name in full:
        assert full[name] == in_place[name], (name, len(full[name]), len(in_place[name]))
    assert all(len(rows) > 0 for rows in full.values())
    text = world.all_text("deidentified.duckdb", DATASETS) + world.all_text("marts.duckdb", MARTS)
    assert not [p for p in pseudonyms_of(world.opted_out) if p in text]


def test_erasure_also_removes_raw_rows_and_landed_copies(world, capsys):
    person = pick_employee(world, exclude={world.opted_out["employee_id"]})
    landed = next((world.data_dir / "landing" / "hr").glob("employees_*.csv"))
    mtime = landed.stat().st_mtime_ns
    rid = add_request(world, "erasure", person["email"], capsys)
    results = world.apply_requests()
    assert results
    for table, column, value in (
        ("hr_employees", "email", person["email"]),
        ("finance_expense_claims", "employee_id", person["employee_id"]),
        ("it_security_incidents", "reporter_email", person["email"]),
    ):
        assert world.query("raw.duckdb", f"SELECT count(*) FROM {table} WHERE {column} = ?", [value]) == [(0,)], table
    assert person["email"] not in landed.read_text() and landed.stat().st_mtime_ns == mtime
    claims = next((world.data_dir / "landing" / "finance").glob("*.csv")).read_text()
    assert person["employee_id"] not in claims
    records = [json.loads(line) for line in (world.data_dir / "audit" / "pipeline.jsonl").read_text().splitlines()]
    replaced = [r for r in records if r.get("action") == "erasure_file_replaced"]
    assert {r["dataset"] for r in replaced} >= {"hr_employees", "finance_expense_claims", "it_security_incidents"}
    assert all(r["rows_removed"] >= 1 and r["sha256_before"] != r["sha256_after"] for r in replaced)
    text = world.all_text("deidentified.duckdb", DATASETS)
    assert not [p for p in pseudonyms_of(person) if p in text]
    assert store.status(store.load(world.paths)[rid])["state"].startswith("applied in run")
    # erased rows change the known-identifier index that masks text: not applied in place, and it says so
    applied = application(results[-1], "hr_employees")
    assert applied["mode"] == "full rebuild" and "erasure" in applied["reason"] and applied["requests"] == [rid]


def test_a_request_for_nobody_changes_nothing_and_says_so(world, capsys):
    before = {t: world.query("deidentified.duckdb", f"SELECT count(*) FROM {t}")[0][0] for t in DATASETS}
    rid = add_request(world, "opt-out", "nobody.at.all@example-corp.com", capsys)
    results = world.apply_requests()
    assert len(results) == 1  # resolved; nothing to rebuild
    after = {t: world.query("deidentified.duckdb", f"SELECT count(*) FROM {t}")[0][0] for t in DATASETS}
    assert after == before
    assert store.status(store.load(world.paths)[rid])["state"].startswith("matched nobody")
    record = [json.loads(line) for line in (world.data_dir / "audit" / "pipeline.jsonl").read_text().splitlines()][-1]
    assert record["action"] == "subject_requests" and record["requests"][rid]["matched"] is False
    assert "nobody.at.all" not in (world.data_dir / "audit" / "pipeline.jsonl").read_text()


def test_a_rerun_keeps_them_out(world):
    person = world.opted_out
    result = world.run("hr_employees_job")  # re-ingests HR's landed file, which still holds the opted-out employee
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert application(result, "hr_employees")["reason"].startswith("a raw table was re-ingested")
    text = world.all_text("deidentified.duckdb", ("hr_employees",)) + world.all_text("marts.duckdb", MARTS)
    assert not [p for p in pseudonyms_of(person) if p in text]
    assert world.query(
        "raw.duckdb",
        "SELECT count(*) FROM hr_employees WHERE email = ? AND _subject_request IS NOT NULL",
        [person["email"]],
    ) == [(1,)]


def test_retention_removes_exactly_the_rows_past_the_horizon(world):
    now, horizon = "2026-03-01T00:00:00+00:00", "2025-03-01"  # IT and Support keep 365 days, Finance 2555
    before = {t: world.query("raw.duckdb", f"SELECT count(*) FROM {t}")[0][0] for t in DATASETS}
    old_it = world.query(
        "raw.duckdb", "SELECT count(*) FROM it_security_incidents WHERE CAST(reported_at AS DATE) < ?", [horizon]
    )[0][0]
    old_support = world.query(
        "raw.duckdb", "SELECT count(*) FROM support_tickets WHERE CAST(opened_at AS DATE) < ?", [horizon]
    )[0][0]
    assert old_it and old_support
    result = world.run(RETENTION_JOB, tags={NOW_TAG: now})
    after = {t: world.query("raw.duckdb", f"SELECT count(*) FROM {t}")[0][0] for t in DATASETS}
    assert after == {
        **before,
        "it_security_incidents": before["it_security_incidents"] - old_it,
        "support_tickets": before["support_tickets"] - old_support,
    }
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert all(checks.values()) and ("retention_purge", "retention_it_security_incidents") in checks
    landed = next((world.data_dir / "landing" / "it").glob("*.csv"))
    with landed.open() as f:
        assert all(row["reported_at"][:10] >= horizon for row in csv.DictReader(f))
    assert world.query(
        "deidentified.duckdb", "SELECT count(*) FROM it_security_incidents WHERE reported_at < '2025-03'"
    ) == [(0,)]
    md = world.instance.get_latest_materialization_event(
        dg.AssetKey("deidentified_hr_employees")
    ).asset_materialization.metadata
    assert (
        "landing time" in md["retention"].value["basis"]
        and md["retention"].value["last_purge"]["raw_rows_removed"] == 0
    )


# --- the absence proof reads every column kind an identifier can sit in ----------------------------------------


SECRET = b"k" * 32


def _keys(*pairs: tuple[str, str]) -> set[str]:
    return {pseudonym(SECRET, entity, value) for entity, value in pairs}


@pytest.fixture()
def typed_table():
    """A de-identified-like table with one column of each kind; the requested person sits in some of them."""
    con = duckdb.connect()
    con.execute("""CREATE TABLE t (note VARCHAR, member_code VARCHAR, customer_no BIGINT, account DECIMAL(12, 0), tags VARCHAR[],
                   opened DATE, score DOUBLE, active BOOLEAN, other_no INTEGER)""")
    person_key = pseudonym(SECRET, "EMAIL_ADDRESS", "ana@example.org")
    con.execute(
        "INSERT INTO t VALUES (?, 'MC-77-QX', 4821337, 99001, ['vip', ?], DATE '2025-03-01', 4821337, true, 5), "
        "('nothing here', 'MC-10-AB', 1, 2, ['x'], DATE '2025-03-02', 1.5, false, 6)",
        [f"escalated for {person_key}", person_key],
    )
    yield con
    con.close()


def test_absence_finds_a_person_in_text_typed_ids_and_nested_values(typed_table):
    from pipelines.lifecycle.matching import absence

    keys = _keys(
        ("EMAIL_ADDRESS", "ana@example.org"),
        ("CUSTOMER_ID", "4821337"),
        ("ACCOUNT_ID", "99001"),
        ("MEMBER_ID", "MC-77-QX"),
    )
    found = absence(typed_table, "t", SECRET, keys)
    assert set(found) == {"note", "member_code", "customer_no", "account", "tags"}  # not the double, boolean or date
    assert found["customer_no"] == {"kind": "typed_id", "distinct_values_equal_to_identifier": 1}
    assert found["member_code"]["distinct_values_equal_to_identifier"] == 1  # a kept id no span pattern knows
    assert found["note"]["cells_with_pseudonym"] == 1 and found["tags"]["kind"] == "text"
    assert "4821337" not in json.dumps(found) and "MC-77" not in json.dumps(found)  # counts only, never a value


def test_absence_reads_dates_only_for_a_person_with_a_date_identifier(typed_table):
    from pipelines.lifecycle.matching import absence

    assert absence(typed_table, "t", SECRET, _keys(("EMAIL_ADDRESS", "nobody@example.org"))) == {}
    found = absence(typed_table, "t", SECRET, _keys(("DATE_TIME", "2025-03-01")))
    assert set(found) == {"opened"} and found["opened"]["kind"] == "temporal"


def test_scrub_clears_every_kind_then_absence_holds(typed_table):
    from pipelines.lifecycle.matching import absence, scrub

    keys = _keys(("EMAIL_ADDRESS", "ana@example.org"), ("CUSTOMER_ID", "4821337"), ("MEMBER_ID", "MC-77-QX"))
    changed = scrub(typed_table, "t", SECRET, keys)
    assert set(changed) == {"note", "member_code", "customer_no", "tags"}
    assert absence(typed_table, "t", SECRET, keys) == {}
    rows = typed_table.execute("SELECT member_code, customer_no, score, other_no FROM t ORDER BY other_no").fetchall()
    assert rows == [("<MEMBER_ID>", None, 4821337.0, 5), ("MC-10-AB", 1, 1.5, 6)]  # the others untouched


# --- retention runs by default; a purge of most of a dataset at once waits for a steward ------------------------


@pytest.fixture()
def incidents(tmp_path):
    """IT's contract and a raw table of 10 incidents, 8 of them reported in January 2025 and 2 in December 2025."""
    from pipelines.ingest import SOURCE_FILE_COLUMN

    contract = next(c for c in load_contracts() if c.dataset == "it_security_incidents")
    con = duckdb.connect()
    con.execute(f"CREATE TABLE it_security_incidents (reported_at TIMESTAMP, {SOURCE_FILE_COLUMN} VARCHAR)")
    con.execute("INSERT INTO it_security_incidents SELECT TIMESTAMP '2025-01-10 09:00:00', 'a.csv' FROM range(8)")
    con.execute("INSERT INTO it_security_incidents SELECT TIMESTAMP '2025-12-10 09:00:00', 'a.csv' FROM range(2)")
    (tmp_path / "landing").mkdir()
    (tmp_path / "quarantine").mkdir()
    yield contract, con, tmp_path
    con.close()


def _count(con) -> int:
    return con.execute("SELECT count(*) FROM it_security_incidents").fetchone()[0]


def test_a_purge_of_most_of_a_dataset_is_held_until_confirmed(incidents):
    from datetime import datetime

    from pipelines.lifecycle import retention

    contract, con, root = incidents
    now, state = datetime(2026, 6, 1, tzinfo=UTC), {}  # horizon 2025-06-01: 8 of 10 rows are older
    held = retention.purge(con, contract, root / "landing", root / "quarantine", now, state, "run-1")
    assert held["held"]["raw_rows"] == 8 and held["held"]["share"] == 0.8 and _count(con) == 10
    assert (
        state == {} and retention.enforced_horizon(state, contract.dataset) is None
    )  # nothing enforced from a held purge
    done = retention.purge(con, contract, root / "landing", root / "quarantine", now, state, "run-2", confirmed=True)
    assert "held" not in done and done["last_purge"]["raw_rows_removed"] == 8 and _count(con) == 2
    assert retention.enforced_horizon(state, contract.dataset).isoformat() == "2025-06-01"


def test_a_daily_sized_purge_needs_no_confirmation(incidents):
    from datetime import datetime

    from pipelines.lifecycle import retention

    contract, con, root = incidents
    con.execute("INSERT INTO it_security_incidents SELECT TIMESTAMP '2025-12-20 09:00:00', 'a.csv' FROM range(10)")
    report = retention.purge(
        con, contract, root / "landing", root / "quarantine", datetime(2026, 6, 1, tzinfo=UTC), {}, "run-1"
    )
    assert "held" not in report and report["last_purge"]["raw_rows_removed"] == 8 and _count(con) == 12  # 8 of 20: 40%


def test_retention_schedule_runs_by_default():
    from pipelines.definitions import build_definitions

    schedule = build_definitions().get_schedule_def("retention_purge_daily")
    assert (
        schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        and "held until a steward confirms" in schedule.description
    )


@pytest.mark.parametrize(
    "value, entity, found",
    [
        (
            "+1 (555) 010-2233 ext. 9",
            "PHONE_NUMBER",
            True,
        ),  # a format no span pattern reads: found whole, by its digits
        ("M-48213", "MEMBER_ID", True),  # a type without a shape: every short value is hashed
        ("ana@example.org", "EMAIL_ADDRESS", True),
        (
            "no digits here",
            "PHONE_NUMBER",
            False,
        ),  # normalized to nothing, it would equal every digitless text: not an identifier
    ],
)
def test_whole_values_are_found_whatever_their_format(value, entity, found):
    from pipelines.lifecycle.matching import whole_value_hits

    keys = _keys((entity, value))
    assert (whole_value_hits([value, "unrelated"], SECRET, keys) == {value: entity}) is found


def test_pseudonyms_are_left_to_the_pattern_search():
    from pipelines.lifecycle.matching import absence, whole_value_hits

    key = pseudonym(SECRET, "EMAIL_ADDRESS", "ana@example.org")
    assert whole_value_hits([key], SECRET, {key}) == {}  # not hashed again as if it were a raw value...
    con = duckdb.connect()
    con.execute("CREATE TABLE t (email VARCHAR)")
    con.execute("INSERT INTO t VALUES (?)", [key])
    assert absence(con, "t", SECRET, {key})["email"]["cells_with_pseudonym"] == 1  # ...because the pattern finds it


def test_mentions_masked_the_same_with_a_shared_memo():
    from pipelines.lifecycle.matching import masked_mentions

    keys = _keys(("PERSON", "Ana Lima"), ("EMAIL_ADDRESS", "ana@example.org"))
    texts = ["Call Ana Lima today", "ana@example.org wrote; Ana Lima again", "Bo Chen only", "Ana Lima"]
    memo: dict = {}
    assert [masked_mentions(t, SECRET, keys, memo) for t in texts] == [masked_mentions(t, SECRET, keys) for t in texts]
    assert masked_mentions(texts[1], SECRET, keys) == ("<EMAIL_ADDRESS> wrote; <PERSON> again", 2) and memo
