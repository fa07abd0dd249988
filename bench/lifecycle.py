"""Section 7: privacy over time. A data subject's opt-out, from being recorded to its proven absence, against a full run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_KEY, PROJECT_ROOT, fmt_s, machine, md_table, stamp

TITLE = "## 7. Privacy over time: a data subject's request, recorded to proven absent"
STAGES = (  # step key -> stage, first match wins
    ("subject requests (resolve, erase/flag)", lambda k: k == "subject_requests"),
    ("ingest + quality (raw_*)", lambda k: k.startswith("raw_")),
    ("de-identify + gates (deidentified_*)", lambda k: k.startswith("deidentified_")),
    ("publish (marts, DP release)", lambda k: k.startswith("publish")),
    ("dbt build + mart checks", lambda k: True),
)


def stage_of(step: str) -> str:
    return next(name for name, match in STAGES if match(step))


def stages(steps: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for step, seconds in steps.items():
        out[stage_of(step)] = out.get(stage_of(step), 0.0) + seconds
    return out


def lifecycle_data_dir(workdir: Path, rows: int) -> Path:
    """Where the section leaves the run's data (section 8 reads its person-level join)."""
    return workdir / "lifecycle" / f"data_{rows}"


def run_measure(rows: int, seed: int, workdir: Path, timeout: float, log) -> dict[str, Any]:
    """`bench.lifecycle_run` in a process of its own (its memory and dbt's log kept apart); its figures."""
    out, run_log = workdir / f"lifecycle_{rows}.json", workdir / f"lifecycle_{rows}.log"
    env = {**__import__("os").environ, "PIPELINES_PSEUDONYM_KEY": BENCH_KEY, "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    with run_log.open("wb") as f:
        try:
            code = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.lifecycle_run",
                    "--rows",
                    str(rows),
                    "--seed",
                    str(seed),
                    "--workdir",
                    str(workdir / "lifecycle"),
                    "--out",
                    str(out),
                ],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - started
    if code != 0 or not out.exists():
        tail = run_log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:]
        log(f"  section 7: {rows:,} rows -> {code}")
        return {"rows_per_department": rows, "status": str(code), "wall_s": round(wall, 1), "tail": "\n".join(tail)}
    figures = json.loads(out.read_text(encoding="utf-8"))
    log(
        f"  section 7: {rows:,} rows: full run {figures['full_run_s']} s, request to proven absence "
        f"{figures['request_to_proven_absence_s']} s ({figures['cost_vs_full_run']:.2f}x)"
    )
    return {**figures, "status": "success", "wall_s": round(wall, 1)}


def section_lifecycle(cfg, log) -> tuple[str, dict]:
    results = [run_measure(rows, cfg.seed, cfg.workdir, cfg.pipeline_timeout, log) for rows in cfg.lifecycle_rows]
    return render(results, cfg.seed), {r["rows_per_department"]: r for r in results}


def _same_steps(r: dict[str, Any]) -> tuple[float, float]:
    """Seconds of the steps the request path ran, in the request path and in the full run (like against like)."""
    ran = {k: v for phase in r["runs"] for k, v in phase["steps"].items()}
    return sum(ran.values()), sum(r["full_run_steps"].get(k, 0.0) for k in ran)


def render(results: list[dict[str, Any]], seed: int, load: tuple[float, ...] | None = None) -> str:
    rows_md, stage_rows, notes = [], [], []
    names = [n for n, _ in STAGES]
    for r in results:
        if r["status"] != "success":
            notes.append(
                f"- **{r['rows_per_department']:,} rows: {r['status']}** after {fmt_s(r['wall_s'])} s:\n\n```\n{r.get('tail', '')}\n```"
            )
            continue
        request_steps, same_in_full = _same_steps(r)
        apply = next((p for p in r["runs"] if p["run"] == "apply"), None)
        rebuilt = [a for a in (apply or {}).get("assets", []) if a.startswith("deidentified_")]
        applied = r.get("applied", {})
        in_place = sorted(ds for ds, a in applied.items() if a.get("mode") == "applied in place")
        rows_md.append(
            [
                f"{r['rows_per_department']:,}",
                fmt_s(r["full_run_s"]),
                fmt_s(r["request_to_proven_absence_s"]),
                f"{r['cost_vs_full_run']:.2f}x",
                " + ".join(f"{p['run']} {fmt_s(p['seconds'])} s ({len(p['assets'])} assets)" for p in r["runs"]),
                f"{len(rebuilt)} of 4 ({len(in_place)} in place)" if applied else f"{len(rebuilt)} of 4",
                f"{same_in_full / request_steps:.2f}x" if request_steps else "-",
                f"{r['peak_rss_mib']:,}",
            ]
        )
        full, req = stages(r["full_run_steps"]), stages({k: v for p in r["runs"] for k, v in p["steps"].items()})
        for name in names:
            if name in full or name in req:
                stage_rows.append([f"{r['rows_per_department']:,}", name, fmt_s(full.get(name)), fmt_s(req.get(name))])
        per_step = {k: v for p in r["runs"] for k, v in p["steps"].items() if k.startswith("deidentified_")}
        full_total = sum(r["full_run_steps"].values()) or 1.0
        share = sum(r["full_run_steps"].get(k, 0.0) for k in per_step) / full_total
        full_deid = sum(r["full_run_steps"].get(k, 0.0) for k in per_step)
        notes.append(
            f"- {r['rows_per_department']:,} rows: the de-identified tables the request touched took {100 * share:.0f}% of the full "
            f"run's step time ({fmt_s(full_deid)} s); applying the request to them took {fmt_s(sum(per_step.values()))} s, "
            f"{100 * sum(per_step.values()) / (request_steps or 1.0):.0f}% of the request path"
            + (
                ": applied in place, the person's rows are deleted in SQL, classes recounted and the gates rerun; no text "
                "is scanned again (support, which did not hold them, was not touched; ingest was skipped)."
                if applied and len(in_place) == len(applied)
                else "."
            )
        )
        for ds, a in sorted(applied.items()):
            notes.append(
                f"  - `deidentified_{ds}`: {a.get('mode')} ({a.get('reason')})"
                + (
                    f"; {a['rows_removed']} row(s) removed, {a['rows_newly_suppressed']} newly withheld for k"
                    if "rows_removed" in a
                    else ""
                )
                + "."
            )
        notes.append(
            f"- {r['rows_per_department']:,} rows: the person had rows in {', '.join(sorted(r['person_rows'])) or 'no dataset'} "
            f"and pseudonyms in the text of {', '.join(sorted(r['person_mentioned_in'])) or 'no other dataset'}; state "
            f'"{r["state"]}", proven absent in {len(r["proven_absent_in"])} assets ({", ".join(r["proven_absent_in"])}). '
            "Rebuilt de-identification steps: "
            + ", ".join(
                f"`{k}` {fmt_s(v)} s (full run {fmt_s(r['full_run_steps'].get(k))} s)"
                for k, v in sorted(per_step.items())
            )
            + "."
        )
    m = machine()
    return "\n".join(
        [
            TITLE,
            "",
            f"Per size: the demo generator (seed {seed}) writes the landing files, `integrate_all` runs once (the full run), then "
            "an opt-out of one employee is recorded (`requests add`, by email; the employee has rows in HR, Finance and IT, the "
            "widest rebuild one person of the demo causes) and applied the way `subject_requests_sensor` does it: each of its "
            "run requests is executed in turn through `subject_requests_job` until it returns none (first `resolve`: the "
            "subject_requests step alone; then `apply`: the de-identified tables that held the person and what reads them). "
            "**Request to proven absence** runs from recording the request to the last absence check passing. Both run in one "
            "process (`python -m bench.lifecycle_run`), back to back on one Dagster instance, so the ratio compares like "
            "with like even though the machine is shared with other engineers' work today (read absolute seconds with ~20% "
            "noise, the ratio as the figure). A deployed sensor adds up to two ticks (30 s each) and the queue's wait.",
            "",
            md_table(
                [
                    "rows per department",
                    "full run (s)",
                    "request to proven absence (s)",
                    "cost vs full run",
                    "runs",
                    "de-identified tables rebuilt",
                    "same steps in the full run vs request path",
                    "peak RSS (MiB)",
                ],
                rows_md,
            ),
            "",
            "Where the time goes (sum of step durations, STEP_START to STEP_SUCCESS, from each run's event log):",
            "",
            md_table(["rows", "stage", "full run (s)", "request path (s)"], stage_rows, "llrr"),
            "",
            *notes,
            "",
            f"_Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, load average at start "
            f"{', '.join(f'{x:.1f}' for x in load or m['load_average_at_start'] or [])}; "
            + stamp(seed).split("; ", 1)[1],
        ]
    )
