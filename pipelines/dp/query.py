"""Analysts' own DP questions of an approved mart: parsed, checked against its approval, charged, audited.

A question is SQL over the mart's name (or its DP table's) or a small spec, and is answered from the
mart's person-level join, never from the mart itself:

    SELECT org_unit, count(*), sum(expense_total_eur), avg(expense_total_eur), median(expense_total_eur)
    FROM mart_org_unit_activity GROUP BY org_unit
    count, sum(expense_total_eur), quantile(expense_total_eur, 0.9) by org_unit, gender
    {"group_by": ["org_unit"], "statistics": [{"kind": "count"}, {"kind": "mean", "column": "expense_total_eur"}]}

Only grouping columns the approval lists (`dp_release.group_by` and `query_group_by`) and measure columns
with approved clipping bounds (its sum and mean measures) may appear; no WHERE, JOIN, HAVING or subquery.
The answer's every value carries its 95% accuracy interval.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from pipelines.dp import budget as budgets
from pipelines.dp.release import Request, Statistic, data_version, plan, release
from pipelines.governance.approvals import Approval, approval_for, load_manifest

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_SPEC = re.compile(r"^(?P<aggs>.+?)\s+by\s+(?P<groups>[a-z0-9_,\s]+)$", re.IGNORECASE | re.DOTALL)
MECHANISM = (
    "OpenDP: Laplace noise (integer), partition selection by noisy count threshold, exponential mechanism for quantiles"
)


class QueryRefused(ValueError):
    """A question the approval does not allow; the message names columns and rules, never values."""


@dataclass(frozen=True)
class Question:
    """A parsed question: grouping columns and statistics (bounds still to come from the approval)."""

    group_by: tuple[str, ...]
    statistics: tuple[Statistic, ...]
    source: str | None = None  # the table the SQL named, checked against the approval


def _agg(node: exp.Expression) -> Statistic:
    """One SELECT aggregate as a statistic (without bounds)."""
    alias = node.alias if isinstance(node, exp.Alias) else None
    fn = node.unalias()
    column = lambda e: e.name.lower() if isinstance(e, exp.Column) else None  # noqa: E731
    if isinstance(fn, exp.Count):
        return Statistic(alias or "count", "count")
    if isinstance(fn, (exp.Sum, exp.Avg)):
        kind = "sum" if isinstance(fn, exp.Sum) else "mean"
        col = column(fn.this)
        return Statistic(alias or f"{kind}_{col}", kind, col)
    if isinstance(fn, exp.Median):
        col = column(fn.this)
        return Statistic(alias or f"median_{col}", "quantile", col, quantile=0.5)
    if isinstance(fn, (exp.Quantile, exp.PercentileCont, exp.PercentileDisc)) or (
        isinstance(fn, exp.Anonymous) and fn.name.lower() in {"quantile", "quantile_cont", "quantile_disc"}
    ):
        args = [fn.this, fn.args.get("quantile")] if not isinstance(fn, exp.Anonymous) else fn.expressions
        level = args[1] if len(args) > 1 else None
        if not (isinstance(level, exp.Literal) and not level.is_string):
            raise QueryRefused("a quantile needs a numeric level, e.g. quantile(column, 0.9)")
        col, q = column(args[0]), float(level.to_py())
        return Statistic(alias or f"q{round(q * 100)}_{col}", "quantile", col, quantile=q)
    raise QueryRefused(f"unsupported expression {fn.sql()[:60]!r}: only count(*), sum, avg/mean, median and quantile")


def _from_sql(sql: str) -> Question:
    """Parse `SELECT groups, aggregates FROM table GROUP BY groups`; anything more is refused."""
    try:
        tree = sqlglot.parse_one(sql.replace("mean(", "avg("), read="duckdb")
    except SqlglotError:
        raise QueryRefused("the question does not parse as SQL or as a spec") from None
    if not isinstance(tree, exp.Select):
        raise QueryRefused("only a single SELECT is allowed")
    for clause in ("where", "having", "joins", "with", "qualify", "limit", "offset", "distinct"):
        if tree.args.get(clause):
            raise QueryRefused(f"{clause.upper()} is not allowed in a DP question")
    if any(isinstance(s, exp.Subquery) for s in tree.find_all(exp.Subquery)):
        raise QueryRefused("subqueries are not allowed in a DP question")
    tables = list(tree.find_all(exp.Table))
    groups = tuple(g.name.lower() for g in (tree.args.get("group").expressions if tree.args.get("group") else []))
    stats, selected = [], []
    for node in tree.selects:
        if isinstance(node.unalias(), exp.Column):
            selected.append(node.unalias().name.lower())
        else:
            stats.append(_agg(node))
    if set(selected) != set(groups):
        raise QueryRefused("selected columns must be exactly the GROUP BY columns (and aggregates)")
    return Question(groups, tuple(stats), tables[0].name.lower() if len(tables) == 1 else "")


def _from_spec(text: str) -> Question:
    """`aggregates by groups`, or JSON {"group_by": [...], "statistics": [{kind, column, quantile, name}]}."""
    if text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
            stats = [
                Statistic(
                    s.get("name") or f"{s['kind']}_{s.get('column') or 'rows'}",
                    s["kind"],
                    s.get("column"),
                    quantile=s.get("quantile"),
                )
                for s in spec["statistics"]
            ]
            return Question(tuple(spec.get("group_by", [])), tuple(stats))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise QueryRefused(
                "the JSON spec needs group_by (a list) and statistics (a list of {kind, column})"
            ) from None
    match = _SPEC.match(text.strip())
    if not match:
        raise QueryRefused("the question is neither SQL nor a spec like 'count, sum(column) by group1, group2'")
    groups = [g.strip() for g in match["groups"].split(",") if g.strip()]
    aggs = match["aggs"].replace("count", "count(*)").replace("count(*)(*)", "count(*)")
    question = _from_sql(f"select {', '.join(groups)}, {aggs} from question group by {', '.join(groups)}")
    return Question(question.group_by, question.statistics)


def parse(text: str) -> Question:
    """A question from SQL or a spec."""
    return _from_sql(text) if text.lstrip().lower().startswith("select") else _from_spec(text)


def _bounded(statistic: Statistic, bounds: dict[str, tuple[float, float]]) -> Statistic:
    """The statistic with the approval's clipping bounds for its column."""
    if statistic.kind == "count":
        return statistic
    if statistic.column not in bounds:
        raise QueryRefused(
            f"column {statistic.column} is not an approved measure of this DP view (allowed: {', '.join(sorted(bounds)) or 'none'})"
        )
    return Statistic(statistic.name, statistic.kind, statistic.column, bounds[statistic.column], statistic.quantile)


def check(question: Question, mart: str, approval: Approval, epsilon: float, delta: float | None = None) -> Request:
    """The question as a DP request, if the approval allows it; QueryRefused says what it does not allow."""
    release_spec, join = approval.dp_release, approval.person_join
    if release_spec is None or join is None:
        raise QueryRefused(f"{mart} has no approved DP release: DP questions are not allowed on it")
    if question.source not in (None, mart, release_spec.table):
        raise QueryRefused(f"a DP question on {mart} must read {mart} (or {release_spec.table}), not another table")
    allowed = [*release_spec.group_by, *release_spec.query_group_by]
    outside = [g for g in question.group_by if g not in allowed]
    if outside:
        raise QueryRefused(f"grouping by {', '.join(outside)} is not approved (allowed: {', '.join(allowed)})")
    if not question.statistics:
        raise QueryRefused("a DP question needs at least one statistic (count, sum, mean, quantile)")
    names = [s.name for s in question.statistics]
    if len(set(names)) != len(names) or any(not _IDENT.match(n) for n in names) or set(names) & set(question.group_by):
        raise QueryRefused("statistic names must be distinct lower-case identifiers, unlike the group columns")
    bounds = {m.column: m.bounds for m in release_spec.measures if m.column and m.bounds}
    if not epsilon > 0:
        raise QueryRefused("epsilon must be greater than 0")
    return Request(
        privacy_unit=join.privacy_unit,
        group_by=question.group_by,
        statistics=tuple(_bounded(s, bounds) for s in question.statistics),
        epsilon=float(epsilon),
        delta=float(delta if delta is not None else release_spec.delta),
        max_contributions=release_spec.max_contributions,
        max_group_rows=release_spec.max_group_rows,
    )


# --- reading the person-level join and answering -------------------------------------------------------


def read_person_level(warehouse: Path, model: str) -> pl.DataFrame:
    """The person-level model's rows, read-only from the warehouse (they stay in this process)."""
    if not _IDENT.match(model):
        raise QueryRefused("the person-level model name is not an identifier")
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return pl.from_arrow(con.sql(f'SELECT * FROM main."{model}"').to_arrow_table())
    except duckdb.Error as exc:  # the class only: DuckDB's message may name a lock holder
        raise QueryRefused(
            f"the person-level model {model} could not be read from the warehouse ({type(exc).__name__})"
        ) from None


def approval_of(manifest: Path | dict, mart: str) -> Approval:
    """The mart's approval from the dbt manifest; refused if it has none or is not a mart."""
    try:
        approval = approval_for(load_manifest(manifest), mart)
    except KeyError:
        raise QueryRefused(f"no model {mart} in the dbt project") from None
    if approval is None or approval.person_level:
        raise QueryRefused(f"{mart} is not an approved mart")
    return approval


def answer(
    ledger: budgets.Ledger,
    mart: str,
    approval: Approval,
    request: Request,
    frame: pl.DataFrame,
    *,
    consumer: str,
    purpose: str,
    kind: str = "query",
    today: date | None = None,
) -> budgets.Outcome:
    """Charge the consumer and answer (or serve the cached answer); BudgetExceeded releases nothing."""
    release_spec = approval.dp_release
    assert release_spec is not None
    period = budgets.period_key(release_spec.period, today)
    charge = budgets.Charge(
        consumer=consumer,
        approval=mart,
        epsilon=request.epsilon,
        delta=request.delta,
        purpose=purpose,
        kind=kind,
        request=request.fingerprint(),
        data_version=data_version(frame),
        mechanism=MECHANISM,
    )
    limit = budgets.budgets_for(ledger, mart, release_spec).get(consumer)

    def compute() -> tuple[pl.DataFrame, dict[str, Any]]:
        done = release(request, frame, plan(request, frame))
        return done.table, done.mechanism

    return budgets.charge(ledger, charge, limit, period, compute)


def ask(
    data_dir: Path,
    manifest: Path | dict,
    mart: str,
    text: str,
    *,
    consumer: str,
    epsilon: float,
    delta: float | None = None,
    purpose: str = "",
    today: date | None = None,
) -> budgets.Outcome:
    """Python entry point: parse, check against the approval, charge, answer from the person-level join."""
    approval = approval_of(manifest, mart)
    request = check(parse(text), mart, approval, epsilon, delta)
    assert approval.person_join is not None
    frame = read_person_level(Path(data_dir) / "warehouse.duckdb", approval.person_join.model)
    return answer(
        budgets.Ledger(Path(data_dir)),
        mart,
        approval,
        request,
        frame,
        consumer=consumer,
        purpose=purpose or "analyst query",
        today=today,
    )
