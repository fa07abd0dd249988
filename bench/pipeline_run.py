"""Section 5: the whole pipeline, one separate process per size, stage times read from Dagster's event log."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BENCH_KEY, PROJECT_ROOT, fmt_rate, fmt_s, md_table, stamp
from demo.generator import dataset_rows

DEIDENTIFY_STAGE = "de-identify + privacy suite and gates (deidentified_*)"  # the stage that grows with the rows
STAGES = (  # step key -> stage, first match wins; a raw or de-identified asset's blocking suites run in its own step
    ("ingest + quality suite (raw_*)", lambda k: k.startswith("raw_")),
    ("known identifiers, subject requests", lambda k: k in ("known_identifiers", "subject_requests")),
    (DEIDENTIFY_STAGE, lambda k: k.startswith("deidentified_")),
    ("dbt build (approved_models)", lambda k: k == "approved_models"),
    ("mart checks (privacy suites, subject absence)", lambda k: k.endswith(("_privacy_suite", "_subject_absence"))),
    ("publish (marts, DP release)", lambda k: k.startswith("publish")),
    ("other steps", lambda k: True),
)
WORKER_MARK = "execute_run"  # the run worker Dagster's launcher starts: `dagster api execute_run ...`
TAIL_LINES = 12


def stage_of(step_key: str) -> str:
    return next(name for name, match in STAGES if match(step_key))


@dataclass
class PipelineResult:
    rows: int
    status: str  # success | failed | timeout | error
    generate_seconds: float | None = None
    wall_seconds: float | None = None
    run_seconds: float | None = None  # RUN_START -> RUN_SUCCESS/FAILURE
    max_rss_mib: float | None = None  # the largest process of the tree: polled VmHWM, or ru_maxrss of waited children
    own_peak_mib: float | None = None  # VmHWM of the run worker (the process that runs the steps), polled
    steps: dict[str, float] = field(default_factory=dict)  # step key -> seconds
    unfinished: list[str] = field(default_factory=list)  # steps started, never finished (timeout)
    failures: list[str] = field(default_factory=list)
    landed_rows: dict[str, int] = field(default_factory=dict)
    tail: str = ""

    @property
    def stages(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for key, seconds in self.steps.items():
            out[stage_of(key)] += seconds
        return dict(out)

    @property
    def interrupted(self) -> list[str]:
        """Steps cut off by the timeout: never finished, or failed with Dagster's interruption error."""
        killed = [f.split(":", 1)[0] for f in self.failures if "Interrupted" in f]
        return self.unfinished + [k for k in killed if k not in self.unfinished]

    @property
    def slowest_step(self) -> tuple[str, float] | None:
        return max(self.steps.items(), key=lambda kv: kv[1]) if self.steps else None


def _env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PIPELINES_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(data_dir / "dagster_home"),
            "PIPELINES_PSEUDONYM_KEY": BENCH_KEY,
            "PYTHONUNBUFFERED": "1",
            "TQDM_DISABLE": "1",
        }
    )
    return env


def _vm_hwm_mib(pid: int) -> float | None:
    """Peak resident set of one live process (Linux /proc), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _descendants(root: int) -> list[int]:
    """Live processes under `root` (its children, theirs...), by parent id from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        children[int(fields[1])].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _poll_tree(root: int, peaks: dict[int, tuple[float, bool]]) -> None:
    """Record each live process's peak RSS under `root` (the command line, `dagster job launch`, the daemon, the
    run worker it launches, dbt...): none of them is waited for by the command, so `ru_maxrss` would miss them."""
    for pid in [root, *_descendants(root)]:
        peak = _vm_hwm_mib(pid)
        if peak is None:
            continue
        try:
            worker = WORKER_MARK in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            worker = False
        before = peaks.get(pid, (0.0, worker))
        peaks[pid] = (max(before[0], peak), before[1] or worker)


def _run(
    cmd: list[str], env: dict[str, str], log: Path, timeout: float
) -> tuple[int | None, float, float, bool, float | None]:
    """Run in its own process group; return (exit code, wall s, largest peak RSS MiB, timed out, run worker's peak MiB)."""
    started = time.perf_counter()
    peaks: dict[int, tuple[float, bool]] = {}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = started + timeout
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            _poll_tree(proc.pid, peaks)
            if time.perf_counter() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGTERM)
                time.sleep(10)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    largest = max([usage.ru_maxrss / 1024, *(peak for peak, _ in peaks.values())])  # ru_maxrss is in KiB on Linux
    worker = max((peak for peak, is_worker in peaks.values() if is_worker), default=None)
    return proc.returncode, wall, largest, timed_out, worker


def _read_events(home: Path) -> dict[str, Any]:
    """Step durations (STEP_START -> STEP_SUCCESS/FAILURE) and run duration from the run's event log."""
    from dagster import DagsterEventType, DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    try:
        runs = instance.get_runs()
        if not runs:
            return {}
        run = runs[0]
        started: dict[str, float] = {}
        steps: dict[str, float] = {}
        failures: list[str] = []
        run_start = run_end = None
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type
            if kind == DagsterEventType.RUN_START:
                run_start = entry.timestamp
            elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
                run_end = entry.timestamp
            elif kind == DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and event.step_key in started:
                steps[event.step_key] = entry.timestamp - started[event.step_key]
                if kind == DagsterEventType.STEP_FAILURE:
                    error = getattr(event.event_specific_data, "error", None)
                    message = (error.message.strip().splitlines() or ["failed"])[0] if error else "failed"
                    failures.append(f"{event.step_key}: {message[:300]}")
        last = max([e.timestamp for e in instance.all_logs(run.run_id)] or [0.0])
        return {
            "steps": steps,
            "unfinished": [k for k in started if k not in steps],
            "failures": failures,
            "run_seconds": (run_end or last) - run_start if run_start else None,
        }
    finally:
        instance.dispose()


def run_pipeline(rows: int, seed: int, workdir: Path, timeout: float, log) -> PipelineResult:
    data_dir = workdir / f"pipeline_{rows}"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    env = _env(data_dir)
    result = PipelineResult(rows=rows, status="error")
    result.landed_rows = {d: dataset_rows(d, rows) for d in ("hr", "finance", "it", "support")}
    log(f"  section 5: generating {rows:,} rows per department")
    code, wall, *_ = _run(
        [
            sys.executable,
            "-m",
            "demo",
            "--rows",
            str(rows),
            "--seed",
            str(seed),
            "--out",
            str(data_dir / "landing"),
        ],
        env,
        workdir / f"generate_{rows}.log",
        timeout,
    )
    result.generate_seconds = wall
    if code != 0:
        result.tail = _tail(workdir / f"generate_{rows}.log")
        return result
    log(f"  section 5: running the pipeline at {rows:,} rows (separate process, timeout {timeout / 60:.0f} min)")
    run_log = workdir / f"run_{rows}.log"
    code, wall, rss, timed_out, own = _run(
        [sys.executable, "-m", "pipelines", "run", "--data-dir", str(data_dir)], env, run_log, timeout
    )
    result.wall_seconds, result.max_rss_mib, result.own_peak_mib = wall, rss, own
    result.status = "timeout" if timed_out else "success" if code == 0 else "failed"
    try:
        events = _read_events(data_dir / "dagster_home")
    except Exception as error:  # the log may be incomplete after a kill
        events = {"failures": [f"event log unreadable: {error}"]}
    result.steps = events.get("steps", {})
    result.unfinished = events.get("unfinished", [])
    result.failures = events.get("failures", [])
    result.run_seconds = events.get("run_seconds")
    if result.status != "success":
        result.tail = _tail(run_log)
    shutil.rmtree(data_dir / "landing", ignore_errors=True)  # the big part; keep databases and the event log
    return result


def _tail(path: Path) -> str:
    try:
        lines = [
            ln
            for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if "Calculating Metrics" not in ln
        ]
    except OSError:
        return ""
    return "\n".join(lines[-TAIL_LINES:])


def section_pipeline(cfg, log) -> tuple[str, dict]:
    results: list[PipelineResult] = []
    for rows in cfg.pipeline_sizes:
        r = run_pipeline(rows, cfg.seed, cfg.workdir, cfg.pipeline_timeout, log)
        results.append(r)
        log(
            f"  section 5: {rows:,} rows -> {r.status}, wall {fmt_s(r.wall_seconds)} s, peak RSS {fmt_s(r.max_rss_mib)} MiB"
        )
    return render_pipeline(results, cfg.seed, cfg.pipeline_timeout), pipeline_data(results)


def pipeline_data(results: list[PipelineResult]) -> dict:
    largest = next((r for r in reversed(results) if r.status == "success"), None)
    data = {}
    for r in results:
        d = {**r.__dict__, "stages": r.stages, "interrupted": r.interrupted}
        if largest and r.status != "success":
            d["linear_estimate_seconds"] = largest.wall_seconds * r.rows / largest.rows
            d["linear_estimate_from"] = largest.rows
        data[r.rows] = d
    return data


def _ratio_cell(r: PipelineResult, base: PipelineResult | None) -> str:
    if base is None or not r.wall_seconds:
        return "-"
    if r is base:
        return "1.0x"
    ratio = f"{r.wall_seconds / base.wall_seconds:.1f}x"
    rows = f"rows x{r.rows / base.rows:.0f}"
    return f"{ratio} ({rows})" if r.status == "success" else f"> {ratio} (did not finish; {rows})"


def render_pipeline(results: list[PipelineResult], seed: int, timeout: float) -> str:
    base = next((r for r in results if r.status == "success"), None)
    largest = next((r for r in reversed(results) if r.status == "success"), None)
    stage_names = [name for name, _ in STAGES]
    header = [
        "rows per department (HR / finance / IT / support)",
        "status",
        "generate (s)",
        "process wall (s)",
        "run (s)",
        *[f"{s} (s)" for s in stage_names],
        "startup + teardown (s)",
        "peak RSS, largest process (MiB)",
        "peak RSS, run worker (MiB)",
        "total rows/s",
        f"wall vs {base.rows:,}" if base else "wall ratio",
    ]
    rows_md = []
    for r in results:
        stages = r.stages
        total_rows = sum(r.landed_rows.values())
        overhead = (r.wall_seconds - r.run_seconds) if (r.wall_seconds and r.run_seconds) else None
        cut = set(r.interrupted)
        stage_cells = []
        for name in stage_names:
            value = stages.get(name)
            partial = any(stage_of(k) == name for k in cut)
            stage_cells.append(fmt_s(value) + (" (cut off)" if partial else "") if value is not None else "-")
        rows_md.append(
            [
                f"{r.rows:,} ({' / '.join(f'{v:,}' for v in r.landed_rows.values())})",
                r.status if r.status == "success" else f"**{r.status}**",
                fmt_s(r.generate_seconds),
                fmt_s(r.wall_seconds),
                fmt_s(r.run_seconds),
                *stage_cells,
                fmt_s(overhead),
                fmt_s(r.max_rss_mib),
                fmt_s(r.own_peak_mib),
                fmt_rate(total_rows / r.wall_seconds) if r.status == "success" and r.wall_seconds else "-",
                _ratio_cell(r, base),
            ]
        )
    step_rows = []
    keys = sorted(
        {k for r in results for k in r.steps} | {k for r in results for k in r.interrupted},
        key=lambda k: (stage_names.index(stage_of(k)), k),
    )
    for key in keys:
        cells = []
        for r in results:
            seconds = r.steps.get(key)
            if key in r.interrupted:
                cells.append(f"cut off at {fmt_s(seconds)}" if seconds is not None else "cut off")
            elif seconds is None:
                cells.append("-")
            else:
                per = ""
                if base and r is not base and base.steps.get(key):
                    per = f" ({seconds / base.steps[key]:.1f}x)"
                cells.append(fmt_s(seconds) + per)
        step_rows.append([key, *cells])
    step_table = md_table(["step", *[f"{r.rows:,} rows (s)" for r in results]], step_rows)
    problems = []
    for r in results:
        if r.status != "success":
            estimate = ""
            if largest:
                est = largest.wall_seconds * r.rows / largest.rows
                estimate = (
                    f" A linear extrapolation of the {largest.rows:,}-row run gives ~{est / 3600:.1f} h "
                    f"({fmt_s(est)} s) for this size (an estimate, not a measurement)."
                )
            problems.append(
                f"- **{r.rows:,} rows: {r.status}** after {fmt_s(r.wall_seconds)} s wall (largest process "
                f"{fmt_s(r.max_rss_mib)} MiB); cut off in: {', '.join(r.interrupted) or '-'}; failures: "
                f"{'; '.join(r.failures) or 'none recorded'}.{estimate}"
            )
            if r.tail:
                problems.append("  Last lines of its log:\n\n```\n" + r.tail + "\n```")
    align = "ll" + "r" * (len(header) - 2)
    return "\n".join(
        [
            "## 5. The whole pipeline (`python -m pipelines run`, job `integrate_all`)",
            "",
            f"Per size: the demo generator (seed {seed}) writes the landing files into a temporary data directory, then the "
            "main job runs in a **separate process** (`python -m pipelines run --data-dir DIR`, with `PIPELINES_DATA_DIR` and "
            "`DAGSTER_HOME` pointing into that directory and a fixed `PIPELINES_PSEUDONYM_KEY`). Stage times are the sums of "
            "step durations (STEP_START to STEP_SUCCESS/FAILURE) from that run's Dagster event log; steps run one at a time "
            "(in-process executor), so stages add up to the run; a raw or de-identified asset's blocking suites and gates run "
            'inside its own step. "Startup + teardown" is process wall minus run: the command queues the run through '
            "`dagster job launch`, starts a `dagster-daemon` whose queue coordinator launches the run worker (`dagster api "
            "execute_run`: imports, definitions, dbt manifest; the spaCy model loads inside the first de-identification "
            "step), then writes the run's OpenLineage events. Peak RSS: `VmHWM` of every process under the command (none of "
            "them is waited for by it), polled every 0.5 s, and `ru_maxrss` of what it waited for; the largest process, and "
            'the run worker that runs the steps ("-" where not recorded). Rows per department: the generator\'s '
            "`--rows` (HR and support that many, finance twice, IT half). Timeout per run: "
            f"{timeout / 60:.0f} min (SIGTERM to the process group). Below ~2,000 rows the k-anonymity gates fail by design. "
            "De-identification streams each raw table in chunks of `PIPELINES_CHUNK_ROWS` (default 100,000) rows and scans "
            "free text in all usable cores (forked workers; their memory is shared with the pipeline process until written).",
            "",
            md_table(header, rows_md, align),
            "",
            "Per step (ratio to the smallest successful run):",
            "",
            step_table,
            "",
            *problems,
            "",
            stamp(seed),
        ]
    )
