"""Governance: departments' data meets only inside approved dbt models, checked on the SQL dbt compiled.

dbt compile takes seconds, so the shipped project is compiled once per session and all the bad models are
added to one copy of the project, compiled once; each test then asserts its violation is reported. No test
reads today's date: every check gets a fixed `today`.
"""

from __future__ import annotations

import copy
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from pipelines.governance.approvals import (
    DBT_PROJECT_DIR,
    Approval,
    ApprovalError,
    CompileError,
    Rule,
    Violation,
    approval_for,
    check_project,
    compile_project,
    load_manifest,
    main,
    model_departments,
)

TODAY = date(2026, 6, 1)  # fixed: the shipped approvals and the test ones (expiring 2027-01-15) are valid then


def _copy_project(dest: Path) -> Path:
    shutil.copytree(DBT_PROJECT_DIR, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return dest


def _approval(
    departments: list[str], join_keys: list[str], publishes: list[str], *, expires: str = "2027-01-15"
) -> str:
    return dedent(f"""\
        approval:
          approved_by: "Data Protection Officer"
          approved_on: 2026-01-15
          expires_on: {expires}
          purpose: Test model.
          departments: {departments}
          join_keys: {join_keys}
          publishes: {publishes}
          quasi_identifiers: [org_unit]
          min_group_size: 5
          group_size_column: headcount
        """)


def _model_yaml(name: str, approval: str) -> str:
    meta = "\n".join("        " + line for line in approval.splitlines())
    return f"version: 2\nmodels:\n  - name: {name}\n    config:\n      meta:\n{meta}\n"


# Bad models live in their own folder, so the folder-level access of marts/staging does not add noise.
BAD_MODELS: dict[str, str] = {
    "bad_unapproved_join": """
        select hr.org_unit, count(*) as tickets
        from {{ ref('stg_hr__employees') }} as hr
        inner join {{ ref('stg_support__tickets') }} as t on hr.email_key = t.customer_key
        group by hr.org_unit
    """,
    "bad_raw_table": "select * from raw.main.hr_employees",
    "bad_read_csv": "select * from read_csv('data/landing/hr/x.csv')",
    "bad_bypass_source": "select employee_id from deidentified.main.hr_employees",
    "bad_raw_source": "select * from {{ source('raw', 'hr_employees') }}",
    "bad_macro_raw": "select * from {{ raw_employees() }}",
    "bad_hook": """
        {{ config(post_hook="create table marts.main.copy as select * from read_csv('x.csv')") }}
        select * from {{ ref('stg_hr__employees') }}
    """,
    "bad_join_key": """
        with hr as (select * from {{ ref('stg_hr__employees') }}),
        claims as (select * from {{ ref('stg_finance__expense_claims') }}),
        joined as (
            select hr.org_unit, hr.employee_key
            from hr
            inner join claims as c on hr.org_unit = c.claim_id and hr.employee_key = c.employee_key
        )
        select org_unit, count(distinct employee_key) as headcount
        from joined group by org_unit having count(distinct employee_key) >= 5
    """,
    "bad_implicit_join": """
        with hr as (select employee_key, org_unit from {{ ref('stg_hr__employees') }}),
        claims as (select employee_key, merchant from {{ ref('stg_finance__expense_claims') }}),
        linked as (
            select hr.org_unit, employee_key
            from hr inner join claims using (employee_key), {{ ref('stg_finance__expense_claims') }} as f2
            where hr.org_unit = f2.merchant
        )
        select org_unit, count(*) as headcount from linked group by org_unit
        having count(*) >= 5
    """,
    "bad_semi_join": """
        select org_unit, count(*) as headcount
        from {{ ref('stg_hr__employees') }}
        where email_key in (select email_key from {{ ref('stg_it__security_incidents') }})
        group by org_unit
        having count(*) >= 5
    """,
    "bad_publishes": """
        with per_unit as (
            select hr.org_unit, hr.gender, count(*) as headcount
            from {{ ref('stg_hr__employees') }} as hr
            left join {{ ref('stg_finance__expense_claims') }} as c on hr.employee_key = c.employee_key
            group by hr.org_unit, hr.gender
        )
        select * from per_unit where headcount >= 5
    """,
}
APPROVALS = {
    "bad_join_key": _approval(["hr", "finance"], ["employee_key"], ["org_unit", "headcount"]),
    "bad_implicit_join": _approval(["hr", "finance"], ["employee_key"], ["org_unit", "headcount"]),
    "bad_semi_join": _approval(["hr", "it"], ["employee_key"], ["org_unit", "headcount"]),
    "bad_publishes": _approval(["hr", "finance"], ["employee_key"], ["org_unit", "headcount"]),
}
RAW_SOURCE_YAML = """
version: 2
sources:
  - name: raw
    database: raw
    schema: main
    tables: [{name: hr_employees}]
"""
RAW_MACRO = "{% macro raw_employees() %}raw.main.hr_employees{% endmacro %}\n"
# The shipped mart, edited in place to link IT incidents on job_family: the approved key is email_key.
MART_EDIT = (
    "left join incidents_per_employee on employees.email_key = incidents_per_employee.email_key",
    "left join incidents_per_employee on employees.job_family = incidents_per_employee.email_key",
)


def _write_bad_project(project: Path) -> None:
    """Add every bad model to a copy of the project, and make stg_support__tickets public."""
    folder = project / "models" / "sandbox"
    folder.mkdir()
    for name, sql in BAD_MODELS.items():
        (folder / f"{name}.sql").write_text(dedent(sql).strip() + "\n")
    for name, approval in APPROVALS.items():
        (folder / f"{name}.yml").write_text(_model_yaml(name, approval))
    (folder / "_raw__sources.yml").write_text(RAW_SOURCE_YAML)
    (project / "macros" / "raw_employees.sql").write_text(RAW_MACRO)
    # same group as staging, as an integration engineer's new model would be (staging is group-private)
    settings = project / "dbt_project.yml"
    settings.write_text(
        settings.read_text().replace("    marts:\n", "    sandbox:\n      +group: integration\n    marts:\n")
    )
    mart = project / "models" / "marts" / "mart_org_unit_activity.sql"
    assert MART_EDIT[0] in mart.read_text()
    mart.write_text(mart.read_text().replace(*MART_EDIT))
    staging = project / "models" / "staging" / "_staging__models.yml"
    staging.write_text(
        staging.read_text().replace(
            "  - name: stg_support__tickets\n", "  - name: stg_support__tickets\n    config: {access: public}\n"
        )
    )


@pytest.fixture(scope="session")
def compile_data_dir(tmp_path_factory) -> Path:
    """An empty data directory for dbt's profile: compiling must not need (or create) any database."""
    return tmp_path_factory.mktemp("compile_data")


@pytest.fixture(scope="session")
def manifests(tmp_path_factory, compile_data_dir) -> dict[str, dict]:
    """Manifests compiled from the shipped project and the bad copy, side by side, once per session."""
    # Always a fresh compile: a stale target/manifest.json would test yesterday's models.
    root = tmp_path_factory.mktemp("governance")
    bad_project = _copy_project(root / "bad_project")
    _write_bad_project(bad_project)
    jobs = {"shipped": (DBT_PROJECT_DIR, root / "shipped_target"), "bad": (bad_project, root / "bad_target")}
    env = {"PIPELINES_DATA_DIR": str(compile_data_dir)}
    with ThreadPoolExecutor(max_workers=2) as pool:  # each compile is a subprocess
        started = {
            name: pool.submit(compile_project, project, project, target, env)
            for name, (project, target) in jobs.items()
        }
        return {name: load_manifest(future.result()) for name, future in started.items()}


@pytest.fixture(scope="session")
def shipped(manifests) -> dict:
    return manifests["shipped"]


@pytest.fixture(scope="session")
def bad(manifests) -> dict:
    return manifests["bad"]


@pytest.fixture(scope="session")
def bad_violations(bad) -> list[Violation]:
    return check_project(bad, today=TODAY)


def _of(violations: list[Violation], model: str, rule: str) -> list[str]:
    return [v.message for v in violations if v.model == model and v.rule == rule]


# --- the shipped project ---------------------------------------------------------------------------


def test_shipped_project_has_no_violations(shipped):
    assert check_project(shipped, today=TODAY) == []


def test_shipped_approvals_and_departments(shipped):
    approval = approval_for(shipped, "mart_org_unit_activity")
    assert isinstance(approval, Approval)
    assert set(approval.departments) == {"hr", "finance", "it"} and approval.min_group_size == 5
    assert approval.group_size_column == "headcount"
    assert approval_for(shipped, "mart_support_satisfaction").group_size_column == "customers"
    assert approval_for(shipped, "stg_hr__employees") is None
    assert model_departments(shipped, "mart_org_unit_activity") == {"hr", "finance", "it"}
    assert model_departments(shipped, "mart_support_satisfaction") == {"support"}
    assert model_departments(shipped, "stg_finance__expense_claims") == {"finance"}


def test_cli_exit_codes(shipped, bad, tmp_path, capsys):
    good_path, bad_path = tmp_path / "good.json", tmp_path / "bad.json"
    good_path.write_text(json.dumps(shipped))
    bad_path.write_text(json.dumps(bad))
    assert main(["--manifest", str(good_path), "--today", TODAY.isoformat()]) == 0
    assert main(["--manifest", str(bad_path), "--today", TODAY.isoformat()]) == 1
    assert "bad_unapproved_join: [unapproved_join]" in capsys.readouterr().out
    assert main(["--manifest", str(tmp_path / "missing.json")]) == 2


# --- rule a: only de-identified data ---------------------------------------------------------------


@pytest.mark.parametrize(
    "model, offending",
    [
        ("bad_raw_table", "raw.main.hr_employees"),
        ("bad_read_csv", "read_csv(...)"),
        ("bad_bypass_source", "deidentified.main.hr_employees (not through source())"),
        ("bad_raw_source", "source raw.hr_employees"),
        ("bad_macro_raw", "raw.main.hr_employees"),  # SQL hidden in a project macro: dbt compiled it
    ],
)
def test_reading_anything_but_deidentified_source_is_caught(bad_violations, model, offending):
    messages = _of(bad_violations, model, Rule.reads_non_deidentified)
    assert f"model {model} reads {offending}, which is not a de-identified source" in messages, messages


def test_hooks_are_refused(bad_violations):
    assert _of(bad_violations, "bad_hook", Rule.reads_non_deidentified) == [
        "model bad_hook has a post-hook, whose SQL the governance check cannot verify"
    ]


def test_each_bad_model_reports_exactly_its_problem(bad_violations):
    assert {(v.model, v.rule) for v in bad_violations} == {
        *(
            (name, Rule.reads_non_deidentified)
            for name in (
                "bad_raw_table",
                "bad_read_csv",
                "bad_bypass_source",
                "bad_raw_source",
                "bad_macro_raw",
                "bad_hook",
            )
        ),
        ("bad_unapproved_join", Rule.unapproved_join),
        *((name, Rule.join_key) for name in ("bad_join_key", "bad_implicit_join", "bad_semi_join")),
        ("mart_org_unit_activity", Rule.join_key),
        ("bad_publishes", Rule.unpublished_column),
        ("stg_support__tickets", Rule.access),
    }


def test_data_values_never_in_messages(bad_violations):
    # the file path is a literal in the SQL; only the function name may surface
    assert not any("landing" in v.message for v in bad_violations)


# --- rule b: joining departments needs an approval -------------------------------------------------


def test_unapproved_cross_department_join_is_caught(bad_violations):
    assert _of(bad_violations, "bad_unapproved_join", Rule.unapproved_join) == [
        "model bad_unapproved_join joins departments hr and support without an approval"
    ]


# --- rule c: join keys -----------------------------------------------------------------------------


def test_join_on_unapproved_key_is_caught_through_ctes(bad_violations):
    messages = _of(bad_violations, "bad_join_key", Rule.join_key)
    assert any("bad_join_key" in m and "column org_unit" in m for m in messages), messages
    assert any("column claim_id" in m for m in messages), messages
    assert not any("employee_key" in m for m in messages)  # the approved key in the same ON is fine


def test_using_and_where_joins_are_checked(bad_violations):
    messages = _of(bad_violations, "bad_implicit_join", Rule.join_key)
    assert any("column org_unit" in m for m in messages) and any("column merchant" in m for m in messages), messages
    assert not any("employee_key" in m for m in messages)  # USING (employee_key) is approved


def test_semi_join_key_is_checked(bad_violations):
    messages = _of(bad_violations, "bad_semi_join", Rule.join_key)
    assert messages == ["model bad_semi_join joins hr and it on column email_key, which is not an approved join key"]


def test_join_to_seed_is_exempt(shipped):
    # mart_org_unit_activity joins claims to the currency_rates seed on `currency`, which is no join key
    assert approval_for(shipped, "mart_org_unit_activity").join_keys == ["employee_key", "email_key"]
    assert not [v for v in check_project(shipped, today=TODAY) if v.rule == Rule.join_key]


# --- rule d: expiry and coverage -------------------------------------------------------------------


def test_shipped_approvals_keep_the_demo_running_for_years(shipped):
    for mart in ("mart_org_unit_activity", "mart_support_satisfaction"):
        assert approval_for(shipped, mart).expires_on >= date(2035, 1, 1)


def test_expired_approval_is_caught(shipped):
    last_day = approval_for(shipped, "mart_org_unit_activity").expires_on
    assert approval_for(shipped, "mart_support_satisfaction").expires_on == last_day
    assert not check_project(shipped, today=last_day)  # valid through its last day
    violations = check_project(shipped, today=last_day + timedelta(days=10))
    assert {"mart_org_unit_activity", "mart_support_satisfaction"} <= {v.model for v in violations}  # and the DP model
    assert {v.rule for v in violations} == {Rule.approval_expired}


def test_expired_approval_says_which_since_when_and_who_renews_it(shipped):
    m = _with_approval(
        shipped,
        "mart_support_satisfaction",
        approved_by="Head of Customer Care",
        approved_on="2025-01-10",
        expires_on="2026-01-31",
    )
    assert _of(check_project(m, today=TODAY), "mart_support_satisfaction", Rule.approval_expired) == [
        "model mart_support_satisfaction: its approval was valid through 2026-01-31, expired since 2026-02-01 "
        "(120 day(s) ago) (approved by Head of Customer Care on 2025-01-10); nothing is built until "
        "Head of Customer Care reviews it and sets a later expires_on in models/marts/mart_support_satisfaction.yml"
    ]


def _with_approval(manifest: dict, model: str, **changes) -> dict:
    m = copy.deepcopy(manifest)
    node = m["nodes"][f"model.privacy_integration.{model}"]
    node["config"]["meta"]["approval"].update(changes)
    return m


def test_approval_must_cover_departments(shipped):
    m = _with_approval(shipped, "mart_org_unit_activity", departments=["hr", "finance"])
    assert _of(check_project(m, today=TODAY), "mart_org_unit_activity", Rule.approval_departments) == [
        "model mart_org_unit_activity reads departments it, which its approval does not cover"
    ]


# --- rule e: published columns ---------------------------------------------------------------------


def test_unlisted_published_column_is_caught_through_select_star(bad_violations):
    assert _of(bad_violations, "bad_publishes", Rule.unpublished_column) == [
        "model bad_publishes publishes column gender, which is not in its approval's publishes"
    ]


def test_publishes_checked_on_shipped_mart(shipped):
    m = _with_approval(
        shipped,
        "mart_support_satisfaction",
        publishes=["product", "opened_month", "tickets", "customers"],
        quasi_identifiers=[],
    )
    messages = _of(check_project(m, today=TODAY), "mart_support_satisfaction", Rule.unpublished_column)
    assert {m.split("column ")[1].split(",")[0] for m in messages} == {"avg_satisfaction", "rated_tickets"}


# --- rule f: access --------------------------------------------------------------------------------


def test_public_staging_model_is_caught(bad_violations):
    assert "staging model stg_support__tickets is access: public; staging stays private" in _of(
        bad_violations, "stg_support__tickets", Rule.access
    )


def test_approved_mart_must_be_public_with_enforced_contract(shipped):
    m = copy.deepcopy(shipped)
    node = m["nodes"]["model.privacy_integration.mart_support_satisfaction"]
    node["access"] = "protected"
    node["config"]["contract"]["enforced"] = False
    messages = _of(check_project(m, today=TODAY), "mart_support_satisfaction", Rule.access)
    assert any("must be access: public" in x for x in messages) and any("enforced" in x for x in messages)


def test_public_model_needs_an_approval(shipped):
    m = copy.deepcopy(shipped)
    del m["nodes"]["model.privacy_integration.mart_support_satisfaction"]["config"]["meta"]["approval"]
    assert _of(check_project(m, today=TODAY), "mart_support_satisfaction", Rule.access) == [
        "model mart_support_satisfaction is access: public without an approval"
    ]


# --- approval records and the group-size filter ----------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        ({"expires_on": None}, "expires_on"),
        ({"min_group_size": 1}, "min_group_size"),
        ({"departments": []}, "departments"),
        ({"approved_by_typo": "x"}, "approved_by_typo"),
        ({"group_size_column": "tickets_total"}, "group_size_column"),
    ],
)
def test_invalid_approval_names_model_and_field(shipped, change, field):
    m = _with_approval(shipped, "mart_support_satisfaction", **change)
    with pytest.raises(ApprovalError, match=f"mart_support_satisfaction.*{field}"):
        approval_for(m, "mart_support_satisfaction")
    assert _of(check_project(m, today=TODAY), "mart_support_satisfaction", Rule.invalid_approval)


def _with_compiled(manifest: dict, model: str, edit) -> dict:
    m = copy.deepcopy(manifest)
    node = m["nodes"][f"model.privacy_integration.{model}"]
    node["compiled_code"] = edit(node["compiled_code"])
    return m


def test_final_query_must_withhold_small_groups(shipped):
    # the macro compiled the approval's minimum into the SQL: `customers >= 5`
    assert (
        "where customers >= 5"
        in shipped["nodes"]["model.privacy_integration.mart_support_satisfaction"]["compiled_code"]
    )
    m = _with_compiled(
        shipped, "mart_support_satisfaction", lambda sql: sql.replace("customers >= 5", "customers >= 2")
    )
    assert _of(check_project(m, today=TODAY), "mart_support_satisfaction", Rule.min_group_size)
    # an approval raised after compiling is checked against the SQL dbt compiled, not a re-rendering
    m = _with_approval(shipped, "mart_support_satisfaction", min_group_size=10)
    assert _of(check_project(m, today=TODAY), "mart_support_satisfaction", Rule.min_group_size)


def test_unparseable_sql_is_refused(shipped):
    m = _with_compiled(shipped, "stg_hr__employees", lambda sql: "attach 'raw.duckdb' as raw")
    assert _of(check_project(m, today=TODAY), "stg_hr__employees", Rule.unreadable_sql)


# --- the gate checks what dbt compiled, from the current files -----------------------------------


def test_edited_mart_joining_on_unapproved_key_is_refused_once_compiled(shipped, bad):
    # the same mart, compiled before the edit (shipped) and after it (bad): only the fresh compile shows it
    assert not _of(check_project(shipped, today=TODAY), "mart_org_unit_activity", Rule.join_key)
    assert _of(check_project(bad, today=TODAY), "mart_org_unit_activity", Rule.join_key) == [
        "model mart_org_unit_activity joins hr and it on column job_family, which is not an approved join key"
    ]


def test_manifest_without_compiled_sql_is_refused(shipped):
    m = copy.deepcopy(shipped)
    del m["nodes"]["model.privacy_integration.mart_org_unit_activity"]["compiled_code"]  # as `dbt parse` leaves it
    assert _of(check_project(m, today=TODAY), "mart_org_unit_activity", Rule.unreadable_sql) == [
        "model mart_org_unit_activity cannot be checked: the manifest holds no compiled SQL for it "
        "(check a manifest from compile_project)"
    ]


def test_incremental_model_is_refused(shipped):
    # set in the manifest: compiling is_incremental() looks up the model's table, which needs the databases
    m = copy.deepcopy(shipped)
    m["nodes"]["model.privacy_integration.stg_hr__employees"]["config"]["materialized"] = "incremental"
    assert _of(check_project(m, today=TODAY), "stg_hr__employees", Rule.unreadable_sql) == [
        "model stg_hr__employees cannot be checked: incremental models are not allowed: "
        "only one branch of is_incremental() is compiled"
    ]


def test_compiling_opens_no_database(manifests, compile_data_dir):
    assert list(compile_data_dir.iterdir()) == []


def test_failed_compile_raises_and_leaves_no_manifest(tmp_path):
    project = _copy_project(tmp_path / "project")
    (project / "models" / "staging" / "stg_hr__employees.sql").write_text("select {{ no_such_macro() }}\n")
    target = tmp_path / "target"
    target.mkdir()
    (target / "manifest.json").write_text("{}")  # an older manifest must not survive a failed compile
    with pytest.raises(CompileError, match="dbt compile of .* failed"):
        compile_project(project, project, target, {"PIPELINES_DATA_DIR": str(tmp_path)})
    assert not (target / "manifest.json").exists()
