"""Measurements for `make bench`: DP release time, and DP error against exact values beside the k-thresholded mart.

    python -m bench.dp_run [--data-dir DIR] [--rows 2000 100000]

`measure(frame, request, ...)` is the function the benchmark calls; `synthetic_people(n)` builds a person-level
table shaped like the demo's (16 org unit x job family groups of very unequal size) when no run is at hand.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.dp.release import Request, Statistic, plan, with_intervals

GROUP_SHARES = [0.16, 0.11, 0.10, 0.08, 0.08, 0.07, 0.06, 0.06, 0.05, 0.05, 0.05, 0.04, 0.03, 0.03, 0.02, 0.011]
DEMO_REQUEST = Request(
    privacy_unit="employee_key",
    group_by=("org_unit", "job_family"),
    statistics=(
        Statistic("headcount", "count"),
        Statistic("expense_total_eur", "sum", "expense_total_eur", (0, 1000)),
        Statistic("security_incidents", "sum", "security_incidents", (0, 4)),
    ),
    epsilon=1.0,
    delta=1e-7,
)


def synthetic_people(n: int, seed: int = 0) -> pl.DataFrame:
    """A person-level table like the demo's (benchmark input only; no real data)."""
    rng = np.random.default_rng(seed)
    shares = np.array(GROUP_SHARES) / sum(GROUP_SHARES)
    group = rng.choice(len(shares), size=n, p=shares)
    return pl.DataFrame(
        {
            "employee_key": [f"e{i:08d}" for i in range(n)],
            "org_unit": [f"unit_{g // 2}" for g in group],
            "job_family": [f"family_{g % 2}" for g in group],
            "age_band": rng.choice(["18-37", "38-57", "58-77"], size=n, p=[0.45, 0.4, 0.15]),
            "gender": rng.choice(["F", "M", "X"], size=n, p=[0.49, 0.49, 0.02]),
            "expense_total_eur": rng.gamma(2.0, 70.0, n),
            "security_incidents": rng.poisson(0.5, n),
        }
    )


def _exact(frame: pl.DataFrame, request: Request) -> pl.DataFrame:
    """Exact per-group values, clipped and rounded exactly as the DP release sees them."""
    aggs = [pl.len().alias("_exact_people")]
    for s in request.statistics:
        if s.kind == "sum":
            whole = (
                (pl.col(s.column).cast(pl.Float64).fill_null(0.0) + 0.5)
                .cast(pl.Int64)
                .clip(*[int(b) for b in s.bounds])
            )
            aggs.append(whole.sum().alias(f"_exact_{s.name}"))
    return frame.group_by(list(request.group_by)).agg(aggs)


def release_time(frame: pl.DataFrame, request: Request = DEMO_REQUEST, repeats: int = 3) -> dict[str, float]:
    """Seconds to plan (OpenDP resolves scale and threshold) and to release once with intervals; medians of `repeats`."""
    plans, releases = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        prepared = plan(request, frame)
        planned = time.perf_counter()
        with_intervals(prepared.noisy(frame), prepared)
        plans.append(planned - started)
        releases.append(time.perf_counter() - planned)
    return {
        "rows": len(frame),
        "plan_s": round(float(np.median(plans)), 3),
        "release_s": round(float(np.median(releases)), 3),
        "repeats": repeats,
    }


def demo_request() -> tuple[Request, int]:
    """The demo approval's own DP release and its k-mart's minimum group size (else DEMO_REQUEST and 5)."""
    try:
        from pipelines.defs.integration import dbt_project
        from pipelines.dp.publish import release_request
        from pipelines.dp.query import approval_of

        approval = approval_of(dbt_project().manifest_path, "mart_org_unit_activity")
        return release_request(approval), approval.min_group_size
    except Exception:  # noqa: BLE001 - no compiled manifest: the same request, as written here
        return DEMO_REQUEST, 5


def _errors(draws: pl.DataFrame, exact: pl.DataFrame, request: Request) -> dict[str, Any]:
    joined = draws.join(exact, on=list(request.group_by), how="left")
    out = {}
    for s in request.statistics:
        truth = "_exact_people" if s.kind == "count" else f"_exact_{s.name}"
        error = (joined[s.name].cast(pl.Float64) - joined[truth].cast(pl.Float64)).abs()
        relative = error / joined[truth].cast(pl.Float64).abs().clip(lower_bound=1.0)
        out[s.name] = {
            "mean_abs_error": round(float(error.mean()), 2),
            "median_relative_error": round(float(relative.median()), 4),
        }
    return out


def measure(
    frame: pl.DataFrame,
    request: Request = DEMO_REQUEST,
    epsilons=(0.5, 1.0, 2.0),
    repeats: int = 50,
    min_group_size: int = 5,
) -> dict[str, Any]:
    """DP error against exact values per epsilon, groups released, and what the k-thresholded mart withholds."""
    exact = _exact(frame, request)
    withheld = exact.filter(pl.col("_exact_people") < min_group_size)
    result: dict[str, Any] = {
        "people": len(frame),
        "groups": len(exact),
        "k_mart": {
            "min_group_size": min_group_size,
            "groups_withheld": len(withheld),
            "people_withheld": int(withheld["_exact_people"].sum() or 0),
            "error_of_published": 0,
        },
        "dp": {},
    }
    for eps in epsilons:
        prepared = plan(replace(request, epsilon=eps), frame)
        draws = pl.concat([prepared.noisy(frame) for _ in range(repeats)])
        released = draws.group_by(list(request.group_by)).len()
        threshold = prepared.accuracy[prepared.count_column]["threshold"]
        small = exact.filter(pl.col("_exact_people") < 2 * threshold)
        kept = released.join(exact, on=list(request.group_by)).filter(pl.col("_exact_people") < min_group_size)
        result["dp"][str(eps)] = {
            "threshold": threshold,
            "repeats": repeats,
            "groups_released_mean": round(len(draws) / repeats, 2),
            "groups_always_released": int((released["len"] == repeats).sum()),
            "groups_under_twice_threshold": len(small),
            "groups_the_k_mart_withholds_ever_released": len(kept),
            "accuracy_95": {
                c: round(a["accuracy"], 1) for c, a in prepared.accuracy.items() if a.get("accuracy") is not None
            },
            "error": _errors(draws, exact, request),
        }
    return result


def _from_run(data_dir: Path) -> pl.DataFrame | None:
    from pipelines.dp.query import read_person_level

    warehouse = data_dir / "warehouse.duckdb"
    return read_person_level(warehouse, "dp_org_unit_activity_people") if warehouse.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dp_run", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a run's data directory (its person-level join); else synthetic")
    parser.add_argument("--rows", type=int, nargs="*", default=[2000, 100_000])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    frames = {f"synthetic_{n}": synthetic_people(n) for n in args.rows}
    if args.data_dir and (run := _from_run(args.data_dir)) is not None:
        frames = {"demo_run": run, **frames}
    request, k = demo_request()
    report = {
        name: {
            "time": release_time(f, request),
            "accuracy": measure(f, request, repeats=args.repeats, min_group_size=k),
        }
        for name, f in frames.items()
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
