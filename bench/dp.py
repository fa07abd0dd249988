"""Section 8: differentially private releases. Release time per size; error against exact values beside the k-mart."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench.common import fmt_s, machine, md_table, stamp
from bench.lifecycle import lifecycle_data_dir

TITLE = "## 8. Differential privacy: release time, and error against exact values beside the k-thresholded mart"
PEOPLE_MODEL = "dp_org_unit_activity_people"
EPSILONS = (0.5, 1.0, 2.0)
FINER = ("org_unit", "job_family", "age_band", "gender")  # the approval's group_by plus its query_group_by


def _frames(cfg, log) -> dict[str, Any]:
    """Input name -> person-level frame: the section-7 run's own join (real pipeline output), then synthetic sizes."""
    from bench.dp_run import synthetic_people
    from pipelines.dp.query import QueryRefused, read_person_level

    frames = {}
    for rows in getattr(cfg, "lifecycle_rows", ()):
        warehouse = lifecycle_data_dir(cfg.workdir, rows) / "warehouse.duckdb"
        try:
            frames[f"pipeline run, {rows:,} rows per department ({PEOPLE_MODEL})"] = read_person_level(
                warehouse, PEOPLE_MODEL
            )
        except QueryRefused as error:  # section 7 did not run or did not finish: the synthetic inputs still measure
            log(f"  section 8: no person-level join from section 7 at {rows:,} rows ({error})")
    for rows in cfg.dp_rows:
        log(f"  section 8: synthetic person-level table of {rows:,} people")
        frames[f"synthetic, {rows:,} people (the demo's 16 groups and shares)"] = synthetic_people(rows, seed=cfg.seed)
    return frames


def section_dp(cfg, log) -> tuple[str, dict]:
    from bench.dp_run import demo_request, measure, release_time

    request, min_group_size = demo_request()
    finer = replace(
        request, group_by=FINER
    )  # what an analyst's DP query may group by: small groups the k-mart would withhold
    data: dict[str, Any] = {
        "request": request.describe(),
        "finer_group_by": list(FINER),
        "min_group_size": min_group_size,
        "inputs": {},
    }
    for name, frame in _frames(cfg, log).items():
        repeats = cfg.dp_repeats if len(frame) <= 200_000 else max(5, cfg.dp_repeats // 4)
        log(f"  section 8: {name}: release time, then {repeats} releases per epsilon")
        started = time.perf_counter()
        data["inputs"][name] = {
            "time": release_time(frame, request),
            "accuracy": measure(frame, request, EPSILONS, repeats, min_group_size),
            "finer": measure(frame, finer, EPSILONS, max(5, repeats // 5), min_group_size),
        }
        log(f"  section 8: {name} done in {time.perf_counter() - started:.0f} s")
    return render(data, cfg.seed), data


def _observations(data: dict[str, Any]) -> list[str]:
    """What the tables say, computed from them (true whatever the figures are)."""
    out = []
    for name, d in data["inputs"].items():
        for block in ("accuracy", "finer"):
            a = d.get(block)
            if not a or "1.0" not in a["dp"]:
                continue
            e, k = a["dp"]["1.0"], a["k_mart"]
            published = a["groups"] - k["groups_withheld"]
            by = data["request"]["group_by"] if block == "accuracy" else data["finer_group_by"]
            out.append(
                f"- {name}, by {', '.join(by)}: "
                f"at epsilon 1 a group needs about {e['threshold']} people to be released (partition selection), so DP releases "
                f"{e['groups_released_mean']} of {a['groups']} groups on average where the k-mart (minimum {k['min_group_size']}) publishes "
                f"{published} exactly; released counts are off by {e['error']['headcount']['mean_abs_error']} people on average."
            )
    return out


def render(data: dict[str, Any], seed: int, load: tuple[float, ...] | None = None) -> str:
    request = data["request"]
    sums = [s for s in request["statistics"] if s["kind"] == "sum"]
    time_rows, error_rows, k_rows = [], [], []
    grouping = {"accuracy": ", ".join(request["group_by"]), "finer": ", ".join(data.get("finer_group_by", []))}
    for name, d in data["inputs"].items():
        t = d["time"]
        time_rows.append(
            [
                name,
                f"{t['rows']:,}",
                d["accuracy"]["groups"],
                fmt_s(t["plan_s"]),
                fmt_s(t["release_s"]),
                fmt_s(t["plan_s"] + t["release_s"]),
            ]
        )
        for block in ("accuracy", "finer"):
            if block not in d:
                continue
            a = d[block]
            k = a["k_mart"]
            k_rows.append(
                [
                    name,
                    grouping[block],
                    a["groups"],
                    f"{a['groups'] - k['groups_withheld']} (exact values)",
                    f"{k['groups_withheld']} ({k['people_withheld']:,} people)",
                ]
            )
            for eps, e in a["dp"].items():
                err = e["error"]
                cells = [
                    f"{err['headcount']['mean_abs_error']:,} / {100 * err['headcount']['median_relative_error']:.2f}%"
                ]
                cells += [
                    f"{err[s['name']]['mean_abs_error']:,} / {100 * err[s['name']]['median_relative_error']:.2f}%"
                    for s in sums
                ]
                acc = e["accuracy_95"]
                error_rows.append(
                    [
                        name,
                        grouping[block],
                        eps,
                        e["repeats"],
                        e["threshold"],
                        f"{e['groups_released_mean']} of {a['groups']}",
                        e["groups_the_k_mart_withholds_ever_released"],
                        *cells,
                        ", ".join(f"{c} ±{v:,}" for c, v in acc.items()),
                    ]
                )
    stats = ", ".join(
        f"{s['name']} ({s['kind']}"
        + (f", clipped to [{s['bounds'][0]:g}, {s['bounds'][1]:g}]" if s.get("bounds") else "")
        + ")"
        for s in request["statistics"]
    )
    m = machine()
    return "\n".join(
        [
            TITLE,
            "",
            f"The release of `mart_org_unit_activity`'s approval (privacy unit `{request['privacy_unit']}`, grouped by "
            f"{', '.join(request['group_by'])}; {stats}; delta {request['delta']:g}, at most {request['max_contributions']} row per "
            "person), computed by OpenDP's Polars API from the person-level join. Inputs: the person-level join that section 7's "
            "pipeline run built (real pipeline output; one row per employee, so 100,000 rows per department give 100,000 people), "
            "and synthetic person-level tables with the demo's 16 groups and their shares (`bench.dp_run.synthetic_people`) "
            "for sizes whose pipeline run does not fit the time (1,000,000 rows per department is 1,000,000 people: the release "
            "reads only the join, so its time depends on people and groups, not on how long de-identification took; section 5 "
            "gives the pipeline's own time at that size). Release time: OpenDP planning (scale and threshold resolved) and one "
            "release with its 95% intervals, medians of 3.",
            "",
            md_table(["input", "people", "groups", "plan (s)", "release (s)", "total (s)"], time_rows),
            "",
            f"Error against the exact values (the same clipped, rounded values without noise), over repeated releases at each "
            "epsilon (fresh OpenDP noise each time, never seeded): mean absolute error / median relative error per released group. "
            '"threshold": a group is released only when its noisy count passes it (partition selection, paid with delta). '
            "Beside it, what the k-thresholded mart publishes: exact values for groups of at least "
            f"{data['min_group_size']} people, and nothing for the rest.",
            "",
            md_table(
                [
                    "input",
                    "grouped by",
                    "epsilon",
                    "releases",
                    "threshold (people)",
                    "groups released (mean)",
                    "groups the k-mart withholds, released by DP",
                    "headcount error",
                    *[f"{s['name']} error" for s in sums],
                    "95% accuracy (±)",
                ],
                error_rows,
                "llrrrrrr" + "r" * len(sums) + "l",
            ),
            "",
            f"What the k-thresholded mart does with the same groups (groups under {data['min_group_size']} people are withheld whole; "
            "the grouping by all four quasi-identifiers is what an analyst's DP query may ask, `query_group_by`, and no k-mart "
            "publishes it):",
            "",
            md_table(["input", "grouped by", "groups", "k-mart publishes", "k-mart withholds"], k_rows, "llrrr"),
            "",
            *_observations(data),
            "",
            f"_Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, load average at start "
            f"{', '.join(f'{x:.1f}' for x in load or m['load_average_at_start'] or [])}; "
            + stamp(seed).split("; ", 1)[1],
        ]
    )
