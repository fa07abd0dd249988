"""Differentially private aggregates with OpenDP's Polars API, over a person-level table.

A `Request` says what to release: grouping columns, statistics (counts, clipped sums, means, quantiles), the
privacy unit (the pseudonymous person key), epsilon and delta. `plan` turns it into one OpenDP measurement:
each person's rows are truncated to `max_contributions`, every value is clipped to its declared bounds, noise
comes from OpenDP's samplers (which take no seed: nothing here can be replayed), and because groups are not
assumed public, a group is released only if its noisy count passes OpenDP's threshold (partition selection,
paid for with delta): a group of one person has no meaningful chance to appear. `release` runs it once and
puts each noisy value beside its 95% accuracy interval (OpenDP's accuracy at alpha 0.05).

Sums are of whole units: values are rounded (half up) before clipping, as OpenDP's integer sum needs.
Means are a noisy sum over the noisy count (both from this one measurement; interval from both at alpha/2).
Quantiles come from OpenDP's exponential mechanism over candidates spread across the bounds; they carry no
interval (the mechanism has no closed-form one), which their metadata says.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import opendp.prelude as dp
import polars as pl
from opendp.accuracy import summarize_polars_measurement

dp.enable_features("contrib")  # OpenDP's Polars API is behind this flag

ALPHA = 0.05  # 95% accuracy intervals
QUANTILE_CANDIDATES = 33
KINDS = ("count", "sum", "mean", "quantile")
COUNT_COLUMN = "_dp_count"  # the count partition selection thresholds, when no count is asked for


class ReleaseError(ValueError):
    """A request OpenDP cannot make private as asked; the message names columns and parameters, never values."""


@dataclass(frozen=True)
class Statistic:
    """One output column: a count of rows (people), a clipped sum or mean, or a quantile of a column."""

    name: str
    kind: str
    column: str | None = None
    bounds: tuple[float, float] | None = None
    quantile: float | None = None  # for kind quantile: 0.5 is the median


@dataclass(frozen=True)
class Request:
    """What to release, from which person-level table columns, at what privacy loss."""

    privacy_unit: str
    group_by: tuple[str, ...]
    statistics: tuple[Statistic, ...]
    epsilon: float
    delta: float
    max_contributions: int = 1
    max_group_rows: int = 1_000_000

    def describe(self) -> dict[str, Any]:
        """The request as plain data (for fingerprints, metadata and the audit trail)."""
        return json.loads(json.dumps(asdict(self)))

    def fingerprint(self) -> str:
        """A stable id of the request: same request, same fingerprint."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """A resolved OpenDP measurement with its accuracy summary (building it is the slow part)."""

    request: Request
    measurement: Any
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)  # output column -> scale, accuracy...
    half_alpha: dict[str, float] = field(default_factory=dict)  # accuracy at alpha/2 (for means)

    @property
    def count_column(self) -> str:
        counts = [s.name for s in self.request.statistics if s.kind == "count"]
        return counts[0] if counts else COUNT_COLUMN

    def noisy(self, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        """One raw OpenDP release of this measurement (fresh noise every call)."""
        return self.measurement(frame.lazy()).collect()


def _whole(column: str) -> pl.Expr:
    """A column rounded half up to whole units, nulls as 0 (OpenDP's integer sum)."""
    return (pl.col(column).cast(pl.Float64).fill_null(0.0) + 0.5).cast(pl.Int64)


def _int_bounds(bounds: tuple[float, float]) -> tuple[int, int]:
    """Clipping bounds widened to whole units (never narrower than declared)."""
    return math.floor(bounds[0]), math.ceil(bounds[1])


def _candidates(bounds: tuple[float, float]) -> list[float]:
    lower, upper = bounds
    step = (upper - lower) / (QUANTILE_CANDIDATES - 1)
    return [lower + i * step for i in range(QUANTILE_CANDIDATES)]


def _expressions(request: Request) -> list[pl.Expr]:
    """The OpenDP Polars expressions, a count first (partition selection thresholds on it)."""
    exprs = [dp.len(signed=True).alias(c.name) for c in request.statistics if c.kind == "count"][:1]
    if not exprs:
        exprs = [dp.len(signed=True).alias(COUNT_COLUMN)]
    for s in request.statistics:
        if s.kind in ("sum", "mean"):
            alias = s.name if s.kind == "sum" else f"_dp_sum_{s.name}"
            exprs.append(_whole(s.column).dp.sum(_int_bounds(s.bounds)).alias(alias))
        elif s.kind == "quantile":
            lower = float(s.bounds[0])
            column = pl.col(s.column).cast(pl.Float64).fill_null(lower)
            exprs.append(column.dp.quantile(s.quantile, _candidates(s.bounds)).alias(s.name))
    return exprs


def _validate(request: Request, schema: pl.Schema) -> None:
    """Refuse requests OpenDP would reject with a less readable error."""
    missing = sorted(
        {request.privacy_unit, *request.group_by, *(s.column for s in request.statistics if s.column)} - set(schema)
    )
    if missing:
        raise ReleaseError(f"columns not in the person-level table: {', '.join(missing)}")
    for s in request.statistics:
        if s.kind not in KINDS:
            raise ReleaseError(f"{s.name}: unknown statistic {s.kind}")
        if s.kind != "count" and (s.bounds is None or not s.bounds[0] < s.bounds[1]):
            raise ReleaseError(f"{s.name}: a {s.kind} needs bounds [lower, upper]")
        if s.kind == "quantile" and not (s.quantile is not None and 0 <= s.quantile <= 1):
            raise ReleaseError(f"{s.name}: a quantile needs a level between 0 and 1")
    if not (request.epsilon > 0 and 0 < request.delta < 1):
        raise ReleaseError("epsilon must be > 0 and delta in (0, 1): groups are released by partition selection")


def _summary(measurement: Any, alpha: float) -> dict[str, dict[str, Any]]:
    """OpenDP's accuracy summary by output column."""
    rows = summarize_polars_measurement(measurement, alpha).to_dicts()
    return {r["column"]: r for r in rows}


def plan(request: Request, frame: pl.DataFrame | pl.LazyFrame) -> Plan:
    """Resolve the request into one OpenDP measurement over frames with this schema (no data is read)."""
    lazy = frame.lazy()
    _validate(request, lazy.collect_schema())
    context = dp.Context.compositor(
        data=lazy,  # only the schema is used here: the domain is inferred from column types
        privacy_unit=dp.unit_of(contributions=1, identifier=request.privacy_unit),
        privacy_loss=dp.loss_of(epsilon=request.epsilon, delta=request.delta),
        split_evenly_over=1,
        margins=[dp.polars.Margin(by=list(request.group_by), max_length=request.max_group_rows)],
    )
    query = context.query().truncate_per_group(request.max_contributions)  # contribution bounding per person
    query = query.group_by(list(request.group_by)).agg(*_expressions(request))
    try:
        measurement = query.resolve()
    except Exception as exc:  # OpenDPException: the message describes the plan, not the data
        raise ReleaseError(f"OpenDP cannot make this release private: {type(exc).__name__}") from None
    loss = measurement.map(1)
    if loss[0] > request.epsilon * (1 + 1e-9) or loss[1] > request.delta:
        raise ReleaseError("the resolved measurement exceeds the requested epsilon/delta")
    return Plan(
        request,
        measurement,
        _summary(measurement, ALPHA),
        {c: r["accuracy"] for c, r in _summary(measurement, ALPHA / 2).items()},
    )


def _interval(name: str, value: pl.Expr, accuracy: float | None) -> list[pl.Expr]:
    """`name`, `name_lower`, `name_upper`: the noisy value and its accuracy interval."""
    if accuracy is None:
        return [
            value.alias(name),
            pl.lit(None, pl.Float64).alias(f"{name}_lower"),
            pl.lit(None, pl.Float64).alias(f"{name}_upper"),
        ]
    return [value.alias(name), (value - accuracy).alias(f"{name}_lower"), (value + accuracy).alias(f"{name}_upper")]


def _mean_interval(s: Statistic, plan: Plan) -> list[pl.Expr]:
    """A mean from the noisy sum and count; its interval from both at alpha/2, clipped to the bounds."""
    total, count = pl.col(f"_dp_sum_{s.name}").cast(pl.Float64), pl.col(plan.count_column).cast(pl.Float64)
    a_sum, a_count = plan.half_alpha[f"_dp_sum_{s.name}"], plan.half_alpha[plan.count_column]
    lower_b, upper_b = s.bounds
    mean = (total / count.clip(lower_bound=1.0)).clip(lower_b, upper_b)
    low_count = (count - a_count).clip(lower_bound=1.0)
    corners = [(total + ds) / n for ds in (-a_sum, a_sum) for n in (low_count, count + a_count)]
    return [
        mean.alias(s.name),
        pl.min_horizontal(*corners).clip(lower_b, upper_b).alias(f"{s.name}_lower"),
        pl.max_horizontal(*corners).clip(lower_b, upper_b).alias(f"{s.name}_upper"),
    ]


def with_intervals(noisy: pl.DataFrame, plan: Plan) -> pl.DataFrame:
    """The published table: groups, then each statistic with its 95% interval (post-processing only)."""
    out: list[pl.Expr] = [pl.col(c) for c in plan.request.group_by]
    for s in plan.request.statistics:
        if s.kind == "mean":
            out += _mean_interval(s, plan)
        else:
            out += _interval(s.name, pl.col(s.name), plan.accuracy.get(s.name, {}).get("accuracy"))
    return noisy.select(out).sort(list(plan.request.group_by))


def mechanism(plan: Plan) -> dict[str, Any]:
    """What a steward reads: mechanism, loss, bounds, unit, per-column noise and the partition threshold."""
    request = plan.request
    columns = {
        c: {
            k: r.get(k) for k in ("aggregate", "distribution", "scale", "accuracy", "threshold") if r.get(k) is not None
        }
        for c, r in plan.accuracy.items()
    }
    return {
        "library": f"OpenDP {_opendp_version()} (Polars API)",
        "privacy_unit": request.privacy_unit,
        "epsilon": request.epsilon,
        "delta": request.delta,
        "max_contributions": request.max_contributions,
        "group_by": list(request.group_by),
        "statistics": [{k: v for k, v in asdict(s).items() if v is not None} for s in request.statistics],
        "partition_selection": f"a group is released only if its noisy count reaches {plan.accuracy.get(plan.count_column, {}).get('threshold')}",
        "noise": columns,
        "accuracy_alpha": ALPHA,
        "seeded": False,
    }


def _opendp_version() -> str:
    from importlib.metadata import version

    return version("opendp")


@dataclass
class Released:
    """One release: the published table, the mechanism it came from, and the request's fingerprint."""

    table: pl.DataFrame
    mechanism: dict[str, Any]
    fingerprint: str


def release(request: Request, frame: pl.DataFrame, prepared: Plan | None = None) -> Released:
    """Plan (unless given) and run one DP release of `frame`; the caller charges the budget."""
    prepared = prepared or plan(request, frame)
    table = with_intervals(prepared.noisy(frame), prepared)
    return Released(table, mechanism(prepared), request.fingerprint())


def data_version(frame: pl.DataFrame) -> str:
    """A content hash of a table (order-independent): a release is cached per data version."""
    if frame.is_empty():
        return hashlib.sha256(json.dumps(frame.columns).encode()).hexdigest()[:16]
    rows = frame.select(
        pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("\x00") for c in frame.columns], separator="\x1f").alias("r")
    ).sort("r")["r"]
    digest = hashlib.sha256(json.dumps(frame.columns).encode())
    for chunk in rows.to_list():
        digest.update(chunk.encode() + b"\x1e")
    return digest.hexdigest()[:16]
