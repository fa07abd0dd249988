"""Departments' data meets only inside approved dbt models: checked on the SQL dbt compiled, with a SQL parse.

An approval is dbt `meta` on a model (`config: meta: approval:` in its YAML), so people read it next to
the model's columns and code reads it from the manifest. `compile_project` runs `dbt compile` on the
project's current files into a target of its own; `check_project` reads each model's `compiled_code`
from that manifest (what `dbt build` from the same target runs, not a re-rendering of its Jinja), names
the relations dbt resolved its refs and sources to (the `relation_name`s of its `depends_on`), parses the
SQL with sqlglot (DuckDB dialect), resolves CTEs, aliases and `*` with sqlglot's scope analysis and
`qualify`, and reports every breach of the rules below. Messages name models, relations and columns,
never data values.

Rules (the `Rule` values):
  a. reads_non_deidentified  a model reads only the `deidentified` source, other models and seeds
  b. unapproved_join         a model whose upstream spans 2+ departments carries an approval
  c. join_key                columns linking relations of different departments are approved join keys
  d. approval_expired / approval_departments
                             the approval is current and covers every department upstream
  e. unpublished_column      the model outputs only the approval's `publishes` columns
  f. access                  staging is never public; approved marts are public with an enforced contract;
                             a public model carries an approval
  plus invalid_approval, min_group_size (the final query withholds groups below the approved minimum)
  and unreadable_sql (SQL the check cannot parse, a manifest without compiled SQL, and incremental
  models, whose other branch dbt does not compile, are refused, not trusted).

Run: python -m pipelines.governance.approvals [--project-dir DIR | --manifest COMPILED.json]
     [--contracts DIR] [--today YYYY-MM-DD]   (without --manifest it compiles the project first)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import sqlglot
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from pipelines.contracts import load_contracts
from pipelines.paths import CONTRACTS_DIR, DBT_PROJECT_DIR

DIALECT = "duckdb"
DIALECTS = {"duckdb": "duckdb", "spark": "spark"}  # dbt adapter -> sqlglot dialect of the SQL it compiles


def dialect_of(manifest: Mapping[str, Any]) -> str:
    """The SQL dialect of a compiled manifest: its adapter's (DuckDB for one that does not say)."""
    return DIALECTS.get(manifest.get("metadata", {}).get("adapter_type") or "", DIALECT)


DEIDENTIFIED_SOURCE = "deidentified"  # source name and attached database alias (profiles.yml)
ALLOWED_RESOURCE_TYPES = {"model", "seed"}
# Table functions that generate values rather than read a file or a database.
VALUE_TABLE_FUNCTIONS = {"range", "generate_series", "unnest"}
# DuckDB functions that read files or other databases wherever they appear in a query.
_READER_FUNCTION = re.compile(r"^(read_\w+|\w+_scan|query|query_table|glob|sniff_csv|parquet_\w+)$")
_IDENT = r"^[a-z][a-z0-9_]*$"


class Rule(StrEnum):
    reads_non_deidentified = "reads_non_deidentified"
    unapproved_join = "unapproved_join"
    join_key = "join_key"
    approval_expired = "approval_expired"
    approval_departments = "approval_departments"
    unpublished_column = "unpublished_column"
    access = "access"
    invalid_approval = "invalid_approval"
    min_group_size = "min_group_size"
    unreadable_sql = "unreadable_sql"


@dataclass(frozen=True)
class Violation:
    model: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}: [{self.rule}] {self.message}"


class ApprovalError(ValueError):
    """An approval record is malformed; the message names the model and the field."""


class DPMeasure(BaseModel):
    """One DP statistic per group: a count of people, or a sum or mean of a person-level column clipped to bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_IDENT)
    kind: Literal["count", "sum", "mean"]
    column: str | None = Field(default=None, pattern=_IDENT)
    bounds: tuple[float, float] | None = None  # clipping per person: one person moves a sum by at most this

    @model_validator(mode="after")
    def _bounded(self) -> DPMeasure:
        if self.kind == "count" and (self.column or self.bounds):
            raise ValueError(f"measure {self.name}: a count takes no column or bounds")
        if self.kind != "count" and (self.column is None or self.bounds is None):
            raise ValueError(f"measure {self.name}: a {self.kind} needs a column and bounds")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"measure {self.name}: bounds must be [lower, upper] with lower < upper")
        return self


class DPBudget(BaseModel):
    """What one consumer (analyst, team, partner) may spend on one approval per period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consumer: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    epsilon: float = Field(gt=0)
    delta: float = Field(default=0.0, ge=0, lt=1e-3)


class PersonJoin(BaseModel):
    """The person-level join a mart aggregates (a dbt model, never published) and its re-identification threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(pattern=_IDENT)
    privacy_unit: str = Field(pattern=_IDENT)  # the pseudonymous person key: one person is one unit across departments
    min_k: int | None = Field(default=None, ge=2)  # k over the model's quasi-identifiers; default: min_group_size


class DPRelease(BaseModel):
    """A differentially private release of the mart, computed by OpenDP from its person-level join."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(pattern=_IDENT)  # the published table in the analysts' database
    epsilon: float = Field(gt=0, le=10)
    delta: float = Field(gt=0, lt=1e-3)  # spent on partition selection: groups are never assumed public
    max_contributions: int = Field(default=1, ge=1)  # rows one person may contribute (the rest are dropped)
    group_by: list[str] = Field(min_length=1)
    measures: list[DPMeasure] = Field(min_length=1)
    max_group_rows: int = Field(default=1_000_000, ge=1)  # public upper bound OpenDP needs for float sums
    query_group_by: list[str] = []  # further columns analysts' DP queries may group by
    period: Literal["day", "month", "quarter", "year"] = "month"
    release_consumer: str = Field(
        default="publication", pattern=r"^[a-z][a-z0-9_.-]*$"
    )  # who pays for the published table
    budgets: list[DPBudget] = []

    @model_validator(mode="after")
    def _consistent(self) -> DPRelease:
        names = [m.name for m in self.measures]
        if len(set(names)) != len(names) or set(names) & set(self.group_by):
            raise ValueError("measure names must be unique and differ from group_by")
        for name in ("group_by", "query_group_by"):
            bad = [v for v in getattr(self, name) if not re.match(_IDENT, v)]
            if bad:
                raise ValueError(f"{name}: not lower-case identifiers: {', '.join(bad)}")
        consumers = [b.consumer for b in self.budgets]
        if len(set(consumers)) != len(consumers):
            raise ValueError("budgets: one entry per consumer")
        return self


class Approval(BaseModel):
    """Who allowed which departments to meet in a model, on which keys, publishing what, until when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approved_by: str = Field(min_length=1)
    approved_on: date
    expires_on: date
    purpose: str = Field(min_length=1)
    departments: list[str] = Field(min_length=1)
    join_keys: list[str] = []
    publishes: list[str] = Field(min_length=1)
    quasi_identifiers: list[str] = []
    min_group_size: int = Field(ge=2)
    group_size_column: str = Field(pattern=_IDENT)
    person_level: bool = (
        False  # rows are people: read only by the person-level risk gate and DP releases, never published
    )
    person_join: PersonJoin | None = None
    dp_release: DPRelease | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Approval:
        for name in ("departments", "join_keys", "publishes", "quasi_identifiers"):
            values: list[str] = getattr(self, name)
            bad = [v for v in values if not re.match(_IDENT, v)]
            if bad:
                raise ValueError(f"{name}: not lower-case identifiers: {', '.join(bad)}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: duplicate entries")
        if self.expires_on <= self.approved_on:
            raise ValueError("expires_on must be after approved_on")
        unpublished = sorted(set(self.quasi_identifiers) - set(self.publishes))
        if unpublished:
            raise ValueError(f"quasi_identifiers not in publishes: {', '.join(unpublished)}")
        if self.group_size_column not in self.publishes:
            raise ValueError(f"group_size_column '{self.group_size_column}' is not in publishes")
        if self.person_level and (self.person_join or self.dp_release):
            raise ValueError("a person_level model is itself the person join: no person_join or dp_release")
        if self.dp_release is not None and self.person_join is None:
            raise ValueError("dp_release needs person_join (the person-level model it reads and its privacy unit)")
        return self

    @classmethod
    def from_meta(cls, model: str, raw: Any) -> Approval:
        """Validate a model's `meta.approval`; errors name the model and field, never the value."""
        if not isinstance(raw, Mapping):
            raise ApprovalError(f"model {model}: meta.approval must be a mapping")
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as e:
            fields = "; ".join(
                f"field '{'.'.join(str(p) for p in err['loc']) or '(approval)'}': {err['msg']}" for err in e.errors()
            )
            raise ApprovalError(f"model {model}: invalid approval: {fields}") from None


# --- manifest --------------------------------------------------------------------------------------


def load_manifest(manifest: Mapping[str, Any] | Path | str) -> dict[str, Any]:
    """The manifest as a dict, read from `manifest.json` when given a path."""
    if isinstance(manifest, Mapping):
        return dict(manifest)
    return json.loads(Path(manifest).read_text(encoding="utf-8"))


def _lookup(manifest: Mapping[str, Any], uid: str) -> dict[str, Any] | None:
    return manifest["nodes"].get(uid) or manifest["sources"].get(uid)


def _model_uid(manifest: Mapping[str, Any], model_name: str) -> str:
    """The unique id of the model called `model_name` (root project first)."""
    root = manifest.get("metadata", {}).get("project_name")
    hits = sorted(
        (n["package_name"] != root, uid)
        for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and n["name"] == model_name
    )
    if not hits:
        raise KeyError(f"no model '{model_name}' in the manifest")
    return hits[0][1]


def _is_deidentified(source: Mapping[str, Any]) -> bool:
    """A source counts only if both its name and its database are the de-identified ones."""
    return source["source_name"] == DEIDENTIFIED_SOURCE and source.get("database") == DEIDENTIFIED_SOURCE


def _meta(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """The node's meta; `config.meta` is where dbt 1.10+ keeps it (top-level `meta` mirrors it)."""
    config = node.get("config", {})
    return (config["meta"] if "meta" in config else node.get("meta")) or {}


def approval_for(manifest: Mapping[str, Any] | Path, model_name: str) -> Approval | None:
    """The model's validated approval, None if it has none; ApprovalError if it is malformed."""
    m = load_manifest(manifest)
    node = m["nodes"][_model_uid(m, model_name)]
    raw = _meta(node).get("approval")
    return None if raw is None else Approval.from_meta(model_name, raw)


def _dataset_departments(contracts_dir: Path) -> dict[str, str]:
    """Contract dataset (= de-identified table name) -> department."""
    return {c.dataset: c.department for c in load_contracts(contracts_dir)}


def _unknown_department(table: str) -> str:
    # A de-identified table without a contract stays its own department, so joining it needs approval.
    return f"unknown:{table}"


def _node_departments(
    manifest: Mapping[str, Any], uid: str, departments: Mapping[str, str], memo: dict[str, frozenset[str]]
) -> frozenset[str]:
    """Departments of the de-identified sources upstream of a node, through refs; seeds have none."""
    if uid in memo:
        return memo[uid]
    memo[uid] = frozenset()  # cycle guard; dbt graphs are acyclic
    node = _lookup(manifest, uid)
    if node is None:
        result: frozenset[str] = frozenset()
    elif node["resource_type"] == "source":
        result = (
            frozenset({departments.get(node["name"]) or _unknown_department(node["name"])})
            if _is_deidentified(node)
            else frozenset()
        )
    else:
        result = frozenset().union(
            *(_node_departments(manifest, d, departments, memo) for d in node.get("depends_on", {}).get("nodes", []))
        )
    memo[uid] = result
    return result


def model_departments(
    manifest: Mapping[str, Any] | Path, model_name: str, contracts_dir: Path = CONTRACTS_DIR
) -> set[str]:
    """Departments whose de-identified data reaches `model_name`, transitively through refs."""
    m = load_manifest(manifest)
    return set(_node_departments(m, _model_uid(m, model_name), _dataset_departments(contracts_dir), {}))


# --- compiling with dbt ---------------------------------------------------------------------------


class CompileError(RuntimeError):
    """`dbt compile` failed, so there is no SQL the check could vouch for."""


class _Unreadable(Exception):
    """The model's compiled SQL is missing or cannot be parsed, so it cannot be checked."""


def dbt_executable() -> str:
    """The project's dbt: `pipelines-dbt` (ends with its parent) beside this interpreter, else dbt itself."""
    # the lookup of pipelines.defs.integration.dbt_executable and pipelines.dbt_child.real_dbt, copied:
    # integration imports this module, and both pull in Dagster, which the CLI does not need
    for name in ("pipelines-dbt", "dbt"):
        beside = Path(sys.executable).parent / name
        found = str(beside) if beside.exists() else shutil.which(name)
        if found:
            return found
    return "dbt"


def compile_project(project_dir: Path, profiles_dir: Path, target_path: Path, env: dict | None = None) -> Path:
    """Compile the project's current files with `dbt compile` into `target_path`; returns its manifest.json.

    No database is opened (`--no-populate-cache`; these models run no introspective queries), so this works
    before any data exists and never locks the warehouse. `env` is added to dbt's environment (for
    PIPELINES_DATA_DIR, which profiles.yml reads). Raises CompileError if dbt fails.
    """
    target_path = Path(target_path).resolve()
    manifest = target_path / "manifest.json"
    manifest.unlink(missing_ok=True)  # never leave an older manifest to be checked instead
    command = [
        dbt_executable(),
        "compile",
        "--quiet",
        "--no-populate-cache",
        "--no-partial-parse",
        "--project-dir",
        str(Path(project_dir).resolve()),
        "--profiles-dir",
        str(Path(profiles_dir).resolve()),
        "--target-path",
        str(target_path),
        "--log-path",
        str(target_path / "logs"),
    ]
    done = subprocess.run(  # cwd: profiles.yml's default data path is relative to the project
        command,
        cwd=project_dir,
        env={**os.environ, "DO_NOT_TRACK": "1", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not manifest.exists():
        manifest.unlink(missing_ok=True)  # dbt writes one even when compiling fails: half-compiled, unusable
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise CompileError(f"dbt compile of {project_dir} failed (exit {done.returncode}):\n{tail}")
    return manifest


_PLACEHOLDER = "__governed__"


def _placeholder(uid: str) -> str:
    """The name a known relation is given in the parsed SQL: from its unique id, lower case for sqlglot."""
    return _PLACEHOLDER + re.sub(r"[^a-z0-9]+", "_", uid.lower())


def _relation_key(database: Any, schema: Any, identifier: Any) -> tuple[str, str, str]:
    # DuckDB identifiers are case-insensitive, quoted or not
    return (str(database or "").lower(), str(schema or "").lower(), str(identifier or "").lower())


def _resolved_relations(manifest: Mapping[str, Any], node: Mapping[str, Any]) -> dict[tuple[str, str, str], str]:
    """(database, schema, identifier) -> unique id of what dbt compiled this node's refs, sources and `this` to.

    Only the node's declared dependencies count: the same table named by hand in the SQL is not in
    `depends_on`, so it stays an unknown relation. Ephemeral models are inlined as CTEs, so their own
    dependencies are this node's too.
    """
    out: dict[tuple[str, str, str], str] = {}
    for uid in [node["unique_id"], *_depends_on(node)]:
        dep = _lookup(manifest, uid)
        if dep is None:
            continue
        if dep is not node and dep.get("config", {}).get("materialized") == "ephemeral":
            out |= {k: v for k, v in _resolved_relations(manifest, dep).items() if v != uid}
            continue
        if dep.get("relation_name"):  # as dbt renders it (Spark has no database: `schema.table`)
            table = exp.to_table(dep["relation_name"], dialect=dialect_of(manifest))
            out[_relation_key(table.catalog, table.db, table.name)] = uid
            continue
        identifier = dep.get("identifier") if dep["resource_type"] == "source" else dep.get("alias")
        out[_relation_key(dep.get("database"), dep.get("schema"), identifier or dep["name"])] = uid
    return out


def _with_placeholders(query: exp.Query, known: Mapping[tuple[str, str, str], str]) -> dict[str, str]:
    """Rename the tables dbt resolved to placeholders (in place); returns placeholder -> unique id."""
    relations: dict[str, str] = {}
    for table in list(query.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            continue
        if table.name.lower().startswith(_PLACEHOLDER):
            raise _Unreadable(f"its SQL names a relation {_PLACEHOLDER}..., a name reserved for the check")
        uid = known.get(_relation_key(table.catalog, table.db, table.name))
        if uid is None:
            continue
        if not table.alias:  # DuckDB lets columns name the relation by its table name
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
        name = _placeholder(uid)
        table.set("this", exp.to_identifier(name))
        table.set("db", None)
        table.set("catalog", None)
        relations[name] = uid
    return relations


# --- parsing and column lineage --------------------------------------------------------------------


def _parse_query(sql: str, dialect: str = DIALECT) -> exp.Query:
    """The single SELECT (or set operation) a model must consist of."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as e:
        raise _Unreadable(f"its SQL does not parse as {dialect} ({type(e).__name__})") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise _Unreadable("its SQL is not a single SELECT statement")
    return statements[0]


@dataclass(frozen=True)
class _Parsed:
    relations: dict[str, str]  # placeholder -> unique id
    query: exp.Query  # qualified when sqlglot could, so columns carry their relation


@dataclass
class _Project:
    manifest: dict[str, Any]
    contracts: dict[str, list[str]]  # dataset -> columns of its de-identified table
    departments: dict[str, str]  # dataset -> department
    _parsed: dict[str, _Parsed | _Unreadable | None] = field(default_factory=dict)
    _departments: dict[str, frozenset[str]] = field(default_factory=dict)

    def node_departments(self, uid: str) -> frozenset[str]:
        return _node_departments(self.manifest, uid, self.departments, self._departments)

    def parsed(self, uid: str) -> _Parsed:
        """The model's parsed SQL (memoized); raises _Unreadable."""
        if uid not in self._parsed:
            self._parsed[uid] = None  # cycle guard
            try:
                self._parsed[uid] = _parse_model(self, self.manifest["nodes"][uid])
            except _Unreadable as e:
                self._parsed[uid] = e
        result = self._parsed[uid]
        if result is None:
            raise _Unreadable("it depends on itself")
        if isinstance(result, _Unreadable):
            raise result
        return result


def _load_project(manifest: Mapping[str, Any] | Path, contracts_dir: Path) -> _Project:
    contracts = load_contracts(contracts_dir)
    return _Project(
        manifest=load_manifest(manifest),
        contracts={c.dataset: [col.name for col in c.published_columns] for c in contracts},
        departments={c.dataset: c.department for c in contracts},
    )


def _seed_columns(node: Mapping[str, Any]) -> list[str] | None:
    """A seed's columns: the header of its CSV file (only the header is read)."""
    try:
        with (Path(node["root_path"]) / node["original_file_path"]).open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None)
    except (OSError, KeyError, UnicodeDecodeError):
        return None


def _relation_columns(project: _Project, uid: str) -> list[str] | None:
    """Columns of an upstream relation, None when unknown (then `*` over it stays unexpanded)."""
    node = _lookup(project.manifest, uid)
    if node is None:
        return None
    if node["resource_type"] == "source":
        return project.contracts.get(node["name"]) if _is_deidentified(node) else None
    if node["resource_type"] == "seed":
        return _seed_columns(node)
    if node["resource_type"] == "model":
        try:
            columns = _output_columns(project.parsed(uid).query)
        except _Unreadable:
            columns = None
        return columns if columns is not None else _enforced_columns(node)
    return None


def _enforced_columns(node: Mapping[str, Any]) -> list[str] | None:
    """Declared columns, but only when an enforced contract makes them the real ones."""
    if node.get("config", {}).get("contract", {}).get("enforced") and node.get("columns"):
        return list(node["columns"])
    return None


def _compiled_sql(node: Mapping[str, Any]) -> str:
    """The SQL dbt compiled for the node: what `dbt build` runs, not a re-rendering of its Jinja."""
    sql = node.get("compiled_code")
    if sql is None:
        raise _Unreadable("the manifest holds no compiled SQL for it (check a manifest from compile_project)")
    if node.get("config", {}).get("materialized") == "incremental":
        # dbt compiles one branch of is_incremental(); the other would be built without being checked
        raise _Unreadable("incremental models are not allowed: only one branch of is_incremental() is compiled")
    return sql


def _parse_model(project: _Project, node: Mapping[str, Any]) -> _Parsed:
    """Parse the compiled SQL and (where possible) qualify it against its upstream relations' columns."""
    dialect = dialect_of(project.manifest)
    query = _parse_query(_compiled_sql(node), dialect)
    relations = _with_placeholders(query, _resolved_relations(project.manifest, node))
    schema = {
        name: {column: "unknown" for column in columns}
        for name, uid in relations.items()
        if uid != node["unique_id"] and (columns := _relation_columns(project, uid))
    }
    try:
        query = qualify(
            query.copy(),
            schema=schema,
            dialect=dialect,
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
    except (SqlglotError, ValueError, KeyError):
        pass  # unqualified columns are then attributed conservatively (to every relation in scope)
    return _Parsed(relations, query)


def _branches(query: exp.Expression) -> list[exp.Select]:
    """The SELECTs whose rows a query returns (both sides of UNION/EXCEPT/INTERSECT)."""
    query = query.unnest()
    if isinstance(query, exp.SetOperation):
        return _branches(query.left) + _branches(query.right)
    return [query] if isinstance(query, exp.Select) else []


def _output_columns(query: exp.Query) -> list[str] | None:
    """Names of the query's output columns; None while a `*` is left unresolved."""
    branches = _branches(query)
    if not branches or any(s.is_star for b in branches for s in b.selects):
        return None
    return [s.alias_or_name or f"<unnamed expression {i + 1}>" for i, s in enumerate(branches[0].selects)]


# --- rule a: what a model reads --------------------------------------------------------------------


def _function_name(func: exp.Expression) -> str:
    return (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()


def _table_label(table: exp.Table) -> str:
    label = ".".join(part.name for part in table.parts)
    # the de-identified database named directly bypasses source(), so lineage and departments would be lost
    return f"{label} (not through source())" if table.catalog == DEIDENTIFIED_SOURCE else label


def _relation_problem(manifest: Mapping[str, Any], uid: str) -> str | None:
    """Why a relation the model refers to through dbt is not allowed, None if it is."""
    node = _lookup(manifest, uid)
    if node is None:
        return f"{uid.split('.')[-1]} (not in the manifest)"
    if node["resource_type"] == "source":
        return None if _is_deidentified(node) else f"source {node['source_name']}.{node['name']}"
    if node["resource_type"] not in ALLOWED_RESOURCE_TYPES:
        return f"{node['resource_type']} {node['name']}"
    return None


def _external_reads(parsed: _Parsed, manifest: Mapping[str, Any]) -> list[str]:
    """Everything the query reads that is not a CTE, a model, a seed or the de-identified source."""
    found: list[str] = []
    for scope in traverse_scope(parsed.query):
        for table in scope.tables:
            if not isinstance(table.this, exp.Identifier):
                name = _function_name(table.this)
                if name not in VALUE_TABLE_FUNCTIONS:
                    found.append(f"{name}(...)")
            elif not table.db and not table.catalog and table.name in parsed.relations:
                problem = _relation_problem(manifest, parsed.relations[table.name])
                if problem:
                    found.append(problem)
            elif table.db or table.catalog or not isinstance(scope.sources.get(table.name), Scope):
                found.append(_table_label(table))
    for func in parsed.query.find_all(exp.Func):
        if _READER_FUNCTION.match(_function_name(func)):
            found.append(f"{_function_name(func)}(...)")
    return list(dict.fromkeys(found))


# --- rule c: columns that link departments ---------------------------------------------------------


def _conjuncts(condition: exp.Expression | None) -> list[exp.Expression]:
    if condition is None:
        return []
    condition = condition.unnest()
    return list(condition.flatten()) if isinstance(condition, exp.And) else [condition]


def _own_nodes(node: exp.Expression) -> Iterator[exp.Expression]:
    """Nodes of a predicate, without descending into its subqueries (they are scopes of their own)."""
    return node.walk(prune=lambda n: n is not node and isinstance(n, (exp.Subquery, exp.Query)))


@dataclass(frozen=True)
class _Side:
    key: tuple[int, str]  # which relation in which scope
    departments: frozenset[str]


class _Lineage:
    """Departments behind every relation and CTE of one parsed model."""

    def __init__(self, parsed: _Parsed, project: _Project) -> None:
        self.parsed, self.project = parsed, project
        self.scopes = list(traverse_scope(parsed.query))
        self.by_expression = {id(s.expression): s for s in self.scopes}
        self._memo: dict[int, frozenset[str]] = {}

    def source_departments(self, source: Any) -> frozenset[str]:
        if isinstance(source, Scope):
            return self.scope_departments(source)
        if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
            uid = self.parsed.relations.get(source.name)
            return self.project.node_departments(uid) if uid and not source.db else frozenset()
        return frozenset()

    def scope_departments(self, scope: Scope) -> frozenset[str]:
        """Union over what the scope selects from, its set-operation sides and its filtering subqueries."""
        if id(scope) not in self._memo:
            self._memo[id(scope)] = frozenset()
            parts = [self.source_departments(src) for _, src in scope.selected_sources.values()]
            parts += [self.scope_departments(s) for s in [*scope.set_operation_scopes, *scope.subquery_scopes]]
            self._memo[id(scope)] = frozenset().union(*parts)
        return self._memo[id(scope)]

    def column_sides(self, scope: Scope, column: exp.Column) -> list[_Side]:
        """The relation a column belongs to (looking outward for correlated ones); all of them if unqualified."""
        if column.table:
            current: Scope | None = scope
            while current is not None:
                hit = current.selected_sources.get(column.table)
                if hit is not None:
                    return [_Side((id(current), column.table), self.source_departments(hit[1]))]
                current = current.parent
            return []
        return self.sides(scope, list(scope.selected_sources))

    def sides(self, scope: Scope, aliases: list[str]) -> list[_Side]:
        """The named relations of a scope, with their departments."""
        return [
            _Side((id(scope), alias), self.source_departments(scope.selected_sources[alias][1]))
            for alias in aliases
            if alias in scope.selected_sources
        ]

    def predicates(self, scope: Scope) -> Iterator[tuple[exp.Expression, list[_Side]]]:
        """Join conditions (ON, USING, NATURAL) and WHERE conjuncts, each with the relations it involves."""
        select = scope.expression
        if not isinstance(select, exp.Select):
            return
        for join in select.args.get("joins") or []:
            for condition in _conjuncts(join.args.get("on")):
                yield condition, []
            # USING/NATURAL columns sit on both sides (qualify usually rewrites them to ON; this is the fallback)
            both = self.sides(scope, list(scope.selected_sources))
            for identifier in join.args.get("using") or []:
                yield exp.column(identifier.name), both
            if (join.args.get("method") or "").upper() == "NATURAL":
                yield exp.column("<natural join>"), both
        for condition in _conjuncts(select.args.get("where").this if select.args.get("where") else None):
            yield condition, []

    def linking_columns(self) -> Iterator[tuple[str, frozenset[str]]]:
        """(column, departments) for each column in a predicate that links relations of 2+ departments."""
        for scope in self.scopes:
            for predicate, implied in self.predicates(scope):
                columns: list[tuple[str, list[_Side]]] = []
                for node in _own_nodes(predicate):
                    if isinstance(node, exp.Column):
                        columns.append((node.name, implied or self.column_sides(scope, node)))
                    elif isinstance(node.parent, exp.Exists):
                        continue  # EXISTS projects nothing; its correlation is checked in its own scope
                    elif isinstance(node, exp.Subquery | exp.Query) and id(node.unnest()) in self.by_expression:
                        sub = self.by_expression[id(node.unnest())]
                        side = _Side((id(sub), "<subquery>"), self.scope_departments(sub))
                        columns += [(name, [side]) for name in sub.expression.named_selects]
                sides = {s.key: s.departments for _, group in columns for s in group if s.departments}
                departments = frozenset().union(*sides.values())
                if len(sides) < 2 or len(departments) < 2:
                    continue  # one relation, or all from one department (seeds carry none)
                for name, group in columns:
                    if any(s.departments for s in group):
                        yield name, departments


# --- the rules, per model --------------------------------------------------------------------------


def _and_list(items: Iterable[str]) -> str:
    items = sorted(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _folders(node: Mapping[str, Any]) -> list[str]:
    return list(node.get("fqn", [])[1:-1])


def _is_group_size(operand: exp.Expression, select: exp.Select, column: str) -> bool:
    """The operand is the group-size column, by name or as the expression the SELECT names so."""
    if isinstance(operand, exp.Column) and operand.name.lower() == column:
        return True
    return any(isinstance(p, exp.Alias) and p.alias.lower() == column and p.this == operand for p in select.selects)


def _threshold(condition: exp.Expression, select: exp.Select, column: str) -> int | None:
    """The smallest group a `column >= N` style condition lets through, None if it is not one."""
    if isinstance(condition, exp.GTE | exp.GT):
        operand, bound = condition.this, condition.expression
    elif isinstance(condition, exp.LTE | exp.LT):
        operand, bound = condition.expression, condition.this
    else:
        return None
    if not (isinstance(bound, exp.Literal) and bound.is_int and _is_group_size(operand, select, column)):
        return None
    return int(bound.to_py()) + (1 if isinstance(condition, exp.GT | exp.LT) else 0)


def _withholds_small_groups(query: exp.Query, column: str, minimum: int) -> bool:
    """Every branch of the final query keeps only rows with `column >= minimum` (WHERE or HAVING)."""
    branches = _branches(query)
    return bool(branches) and all(
        any(
            (t := _threshold(c, b, column)) is not None and t >= minimum
            for clause in ("where", "having")
            for c in _conjuncts(b.args[clause].this if b.args.get(clause) else None)
        )
        for b in branches
    )


def _depends_on(node: Mapping[str, Any]) -> list[str]:
    return list(node.get("depends_on", {}).get("nodes", []))


def _check_reads(project: _Project, node: Mapping[str, Any], parsed: _Parsed | None) -> list[Violation]:
    """Rule a: only the de-identified source, models and seeds; hooks could read anything, so none."""
    name = node["name"]
    problems = [p for uid in _depends_on(node) if (p := _relation_problem(project.manifest, uid))]
    problems += _external_reads(parsed, project.manifest) if parsed else []
    out = [
        Violation(name, Rule.reads_non_deidentified, f"model {name} reads {p}, which is not a de-identified source")
        for p in dict.fromkeys(problems)
    ]
    for hook in ("pre-hook", "post-hook"):
        if node.get("config", {}).get(hook):
            message = f"model {name} has a {hook}, whose SQL the governance check cannot verify"
            out.append(Violation(name, Rule.reads_non_deidentified, message))
    for uid in _depends_on(node):
        src = project.manifest["sources"].get(uid)
        if src and _is_deidentified(src) and src["name"] not in project.departments:
            table = f"{DEIDENTIFIED_SOURCE}.{src['name']}"
            message = f"model {name} reads {table}, which has no contract (department unknown)"
            out.append(Violation(name, Rule.reads_non_deidentified, message))
    return out


def _check_departments(project: _Project, node: Mapping[str, Any], has_approval: bool) -> list[Violation]:
    """Rule b: a model whose upstream spans two or more departments carries an approval."""
    departments = project.node_departments(node["unique_id"])
    if len(departments) < 2 or has_approval:
        return []
    message = f"model {node['name']} joins departments {_and_list(departments)} without an approval"
    return [Violation(node["name"], Rule.unapproved_join, message)]


def _check_access(node: Mapping[str, Any], approval: Approval | None, has_approval: bool) -> list[Violation]:
    """Rule f: staging private; approved marts public with an enforced contract; public needs approval."""
    name, folders, public = node["name"], _folders(node), node.get("access") == "public"
    problems = []
    if "staging" in folders and public:
        problems.append(f"staging model {name} is access: public; staging stays private")
    person_level = bool(approval and approval.person_level)
    if person_level and public:  # one row per person: read by the pipeline's gate and DP release, never by other groups
        problems.append(
            f"person-level model {name} must not be access: public (set access: protected); its rows are people"
        )
    if approval and not person_level and "marts" in folders and not public:
        problems.append(f"approved mart {name} must be access: public")
    if approval and "marts" in folders and not node.get("config", {}).get("contract", {}).get("enforced"):
        problems.append(f"approved mart {name} must have contract: {{enforced: true}}")
    if public and not has_approval:
        problems.append(f"model {name} is access: public without an approval")
    return [Violation(name, Rule.access, p) for p in problems]


def _approval_file(node: Mapping[str, Any]) -> str:
    """Where the model's approval is written: its YAML (`patch_path` is `project://models/...yml`)."""
    patch = node.get("patch_path") or ""
    return patch.split("://", 1)[-1] or f"the YAML file of model {node['name']}"


def _expired_message(node: Mapping[str, Any], approval: Approval, today: date) -> str:
    """Which approval, since when, who gave it, and who renews it how: enough to act without reading code."""
    since = approval.expires_on + timedelta(days=1)  # expires_on is the last valid day
    return (
        f"model {node['name']}: its approval was valid through {approval.expires_on.isoformat()}, expired since "
        f"{since.isoformat()} ({(today - since).days} day(s) ago) "
        f"(approved by {approval.approved_by} on {approval.approved_on.isoformat()}); nothing is built until "
        f"{approval.approved_by} reviews it and sets a later expires_on in {_approval_file(node)}"
    )


def _check_validity(project: _Project, node: Mapping[str, Any], approval: Approval, today: date) -> list[Violation]:
    """Rule d: the approval is current and names every department upstream."""
    name, out = node["name"], []
    if approval.expires_on < today:
        out.append(Violation(name, Rule.approval_expired, _expired_message(node, approval, today)))
    uncovered = project.node_departments(node["unique_id"]) - set(approval.departments)
    if uncovered:
        message = f"model {name} reads departments {_and_list(uncovered)}, which its approval does not cover"
        out.append(Violation(name, Rule.approval_departments, message))
    return out


_NOT_A_KEY = "which is not an approved join key"
_NOT_PUBLISHED = "which is not in its approval's publishes"


def _check_join_keys(project: _Project, name: str, approval: Approval, parsed: _Parsed) -> list[Violation]:
    """Rule c: every column linking relations of different departments is an approved join key."""
    keys = {k.lower() for k in approval.join_keys}
    linked: dict[str, frozenset[str]] = {}
    for column, departments in _Lineage(parsed, project).linking_columns():
        linked[column] = linked.get(column, frozenset()) | departments
    return [
        Violation(name, Rule.join_key, f"model {name} joins {_and_list(d)} on column {c}, {_NOT_A_KEY}")
        for c, d in linked.items()
        if c.lower() not in keys
    ]


def _check_publishes(node: Mapping[str, Any], approval: Approval, parsed: _Parsed | None) -> list[Violation]:
    """Rule e: output columns (parsed, else declared) and declared columns are all in `publishes`."""
    name, declared = node["name"], list(node.get("columns") or {})
    published = (_output_columns(parsed.query) if parsed else None) or declared
    allowed = {c.lower() for c in approval.publishes}
    return [
        Violation(name, Rule.unpublished_column, f"model {name} publishes column {c}, {_NOT_PUBLISHED}")
        for c in dict.fromkeys([*published, *declared])
        if c.lower() not in allowed
    ]


def _check_person_level_readers(project: _Project, node: Mapping[str, Any]) -> list[Violation]:
    """No model reads a person-level model: its rows reach analysts only through the DP release and the risk gate."""
    out = []
    for dep in node.get("depends_on", {}).get("nodes", []):
        dep_node = project.manifest["nodes"].get(dep)
        raw = _meta(dep_node).get("approval") if dep_node and dep_node.get("resource_type") == "model" else None
        if isinstance(raw, Mapping) and raw.get("person_level") is True:
            out.append(
                Violation(
                    node["name"],
                    Rule.access,
                    (
                        f"model {node['name']} reads person-level model {dep_node['name']}; person-level rows are read only by the "
                        "pipeline's person-level risk gate and DP release, never by another model"
                    ),
                )
            )
    return out


def _check_group_size(name: str, approval: Approval, parsed: _Parsed) -> list[Violation]:
    """The final query withholds groups smaller than the approved minimum (a person-level model has no groups: its rows
    never leave the warehouse, and its risk is measured by the mart gate's k over its quasi-identifiers)."""
    if approval.person_level:
        return []
    column, minimum = approval.group_size_column, approval.min_group_size
    if _withholds_small_groups(parsed.query, column, minimum):
        return []
    message = f"model {name}: the final query must keep only {column} >= {minimum} (approval.min_group_size)"
    return [Violation(name, Rule.min_group_size, message)]


def _parsed_variants(project: _Project, node: Mapping[str, Any]) -> tuple[list[_Parsed], list[Violation]]:
    """The model's parsed compiled SQL, or why it cannot be checked."""
    try:
        return [project.parsed(node["unique_id"])], []
    except _Unreadable as e:
        return [], [Violation(node["name"], Rule.unreadable_sql, f"model {node['name']} cannot be checked: {e}")]


def _check_model(project: _Project, uid: str, today: date) -> list[Violation]:
    """Every rule for one model."""
    node = project.manifest["nodes"][uid]
    name = node["name"]
    variants, out = _parsed_variants(project, node)
    raw = _meta(node).get("approval")
    approval: Approval | None = None
    if raw is not None:
        try:
            approval = Approval.from_meta(name, raw)
        except ApprovalError as e:
            out.append(Violation(name, Rule.invalid_approval, str(e)))
    for parsed in variants or [None]:
        out += _check_reads(project, node, parsed)
    out += _check_departments(project, node, raw is not None)  # an invalid approval is reported as such
    out += _check_access(node, approval, raw is not None)
    out += _check_person_level_readers(project, node)
    if approval is not None:
        out += _check_validity(project, node, approval, today)
        for parsed in variants:
            out += _check_join_keys(project, name, approval, parsed) + _check_group_size(name, approval, parsed)
        for parsed in variants or [None]:
            out += _check_publishes(node, approval, parsed)
    return out


def check_project(
    manifest: Mapping[str, Any] | Path, contracts_dir: Path = CONTRACTS_DIR, today: date | None = None
) -> list[Violation]:
    """All violations in a dbt project, from its manifest and the contracts' departments."""
    project = _load_project(manifest, contracts_dir)
    today = today or date.today()
    out: list[Violation] = []
    for uid, node in sorted(project.manifest["nodes"].items()):
        if node["resource_type"] == "model":
            out += _check_model(project, uid, today)
        elif node["resource_type"] == "operation":  # on-run-start/end hooks run arbitrary SQL
            message = f"project hook {node['name']} runs SQL the governance check cannot verify"
            out.append(Violation(node["name"], Rule.reads_non_deidentified, message))
    return list(dict.fromkeys(out))


# --- CLI -------------------------------------------------------------------------------------------


def _manifest_to_check(args: argparse.Namespace, scratch: Path) -> Path:
    """The manifest given, or the project compiled now into `scratch` (raises CompileError)."""
    if args.manifest is not None:
        return args.manifest
    return compile_project(args.project_dir, args.project_dir, scratch / "target")


def main(argv: list[str] | None = None) -> int:
    """Print violations; exit 1 if there are any, 2 if there is no compiled manifest to check."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.governance.approvals", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--project-dir", type=Path, default=DBT_PROJECT_DIR, help="dbt project to compile and check")
    parser.add_argument("--manifest", type=Path, help="check this manifest.json from `dbt compile` instead")
    parser.add_argument("--contracts", type=Path, default=CONTRACTS_DIR, help="directory of dataset contracts")
    parser.add_argument("--today", type=date.fromisoformat, default=date.today(), help="date for expiry checks")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="governance-") as scratch:
        try:
            manifest = _manifest_to_check(args, Path(scratch))
        except CompileError as e:
            print(e, file=sys.stderr)
            return 2
        if not manifest.exists():
            print(f"no manifest at {manifest}; give a compiled one, or omit --manifest to compile", file=sys.stderr)
            return 2
        violations = check_project(manifest, args.contracts, args.today)
        models = sum(n["resource_type"] == "model" for n in load_manifest(manifest)["nodes"].values())
    for v in violations:
        print(v)
    print(f"governance: {models} models checked, {len(violations)} violation(s)", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
