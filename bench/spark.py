"""Bench section: the Spark engine (local, 1 and 2 cores) against the DuckDB engine on the same machine, same run.

python -m bench.spark --rows 100000 --out BENCHMARKS.md   (splices its section into the report)

Per stage rows/s, parallel efficiency from 1 to 2 cores, peak memory of the executors' Python workers, and a
projection for 100 million rows per department on 16, 64 and 256 cores from the measured per-core throughput.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import git_revision, splice_marked
from bench.data import base_rows_for, bench_context, prepare
from demo.generator import MAX_ROWS

BEGIN, END = "<!-- spark-engine:begin -->", "<!-- spark-engine:end -->"
PROJECTED_ROWS = 100_000_000
PROJECTED_CORES = (16, 64, 256)
# stated assumptions of the projection (not measured here: one machine has no network)
NETWORK_BYTES_PER_S = 1.0e9  # 10 GbE per executor, half used
CORES_PER_EXECUTOR = 4
SHUFFLE_BYTES_PER_ROW = 64  # quasi-identifiers (3-4 short strings) and a row id, compressed, per k-anonymity pass
K_PASSES = 3  # count small classes, (re)count after blanking, filter and write


ENGINES = ("duckdb", "spark_1", "spark_2")
STATE_VERSION = 1


class StateMismatch(RuntimeError):
    """A resumed measurement whose generated data or settings differ from those its state file recorded."""


@functools.cache
def _revision() -> str:
    """The code this process runs: read once, at its start (a later edit of the work tree is not what runs)."""
    return git_revision()


def _stamp() -> dict[str, Any]:
    """When, on which code and how busy the machine was as a stage started (stages may run in separate sessions)."""
    return {
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "revision": _revision(),
        "load_before": round(os.getloadavg()[0], 2),
        "machine": _machine(),
    }


def _machine() -> str:
    cpu = "?"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} x {cpu}"


def data_fingerprint(prepared) -> dict[str, Any]:
    """Rows per raw table and a digest of their values (the landed file's path left out): a resumed run must measure
    the same generated data as the stages it adds to."""
    import hashlib

    from pipelines.ingest import SOURCE_FILE_COLUMN, quote_ident

    out: dict[str, Any] = {}
    for contract in prepared.contracts:
        table = quote_ident(contract.dataset)
        columns = [r[0] for r in prepared.con.execute(f"DESCRIBE {table}").fetchall() if r[0] != SOURCE_FILE_COLUMN]
        hashes = ", ".join(f"bit_xor(hash({quote_ident(c)}))" for c in columns)
        row = prepared.con.execute(f"SELECT count(*), {hashes} FROM {table}").fetchone()
        out[contract.dataset] = {
            "rows": row[0],
            "digest": hashlib.sha256(json.dumps([columns, *row[1:]], default=str).encode()).hexdigest()[:16],
        }
    return out


def load_state(path: Path | None, settings: dict[str, Any], fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The measurement so far (a JSON file), or a new one; refuses one made on other data or settings."""
    if path is not None and path.exists():
        state = json.loads(path.read_text())
        if state.get("version") != STATE_VERSION:
            raise StateMismatch(f"{path}: state version {state.get('version')}, this bench writes {STATE_VERSION}")
        for key, value in settings.items():
            if state.get(key) != value:
                raise StateMismatch(f"{path} was measured with {key}={state.get(key)!r}, this run has {value!r}")
        if state["data"] != fingerprint:
            changed = sorted(k for k in {*state["data"], *fingerprint} if state["data"].get(k) != fingerprint.get(k))
            raise StateMismatch(f"{path} was measured on other generated data (differs in: {', '.join(changed)})")
        return state
    return {"version": STATE_VERSION, **settings, "data": fingerprint, "engines": {}}


def save_state(path: Path | None, state: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)  # a kill mid-write leaves the last complete state


def _record(state: dict, path: Path | None, engine: str, stage: str, figures: dict[str, Any], stamp: dict) -> None:
    state["engines"].setdefault(engine, {"stages": {}, "failed": {}})["stages"][stage] = {**figures, **stamp}
    save_state(path, state)


def _engine(state: dict, engine: str) -> dict[str, Any]:
    return state["engines"].setdefault(engine, {"stages": {}, "failed": {}})


def _gate_errors() -> tuple[type[Exception], ...]:
    """The gates' refusals: a refused table is recorded and the others go on (`run_spark_pipeline`'s keep_going)."""
    from pipelines.privacy.classify import UndeclaredPIIError
    from pipelines.privacy.deidentify import PrivacyThresholdError, ResidualPIIError

    return (PrivacyThresholdError, ResidualPIIError, UndeclaredPIIError)


def _pending(state: dict, engine: str, dataset: str) -> bool:
    e = _engine(state, engine)
    return f"deidentify {dataset}" not in e["stages"] and dataset not in e["failed"]


def _duckdb_engine(prepared, ctx, state: dict, path: Path | None, datasets: Sequence[str]) -> None:
    import duckdb

    from pipelines.ingest import SOURCE_FILE_COLUMN
    from pipelines.privacy.deidentify import deidentify_table
    from pipelines.privacy.known import known_identifiers_from_raw

    engine = _engine(state, "duckdb")
    known = prepared.known
    if "known_identifiers" not in engine["stages"]:
        stamp = _stamp()
        t = time.perf_counter()
        known = known_identifiers_from_raw(prepared.con, prepared.contracts)
        figures = {"seconds": time.perf_counter() - t, "rows": _raw_rows(prepared)}
        engine.update(identifiers=known.size, index_bytes=known.nbytes)
        _record(state, path, "duckdb", "known_identifiers", figures, stamp)
    target = duckdb.connect()
    try:
        for contract in prepared.contracts:
            if contract.dataset not in datasets or not _pending(state, "duckdb", contract.dataset):
                continue
            stamp = _stamp()
            t = time.perf_counter()
            try:
                result = deidentify_table(
                    prepared.con,
                    contract.dataset,
                    target,
                    contract.dataset,
                    contract,
                    ctx,
                    known=known,
                    exclude=(SOURCE_FILE_COLUMN,),
                )
            except _gate_errors() as error:  # a gate refused it
                engine["failed"][contract.dataset] = f"{type(error).__name__}: {error}"
                save_state(path, state)
                continue
            target.execute(f"DROP TABLE {contract.dataset}")  # 1M rows per department: keep the memory bounded
            figures = {"seconds": time.perf_counter() - t, "rows": result.rows_in}
            _record(state, path, "duckdb", f"deidentify {contract.dataset}", figures, stamp)
    finally:
        target.close()


def _raw_rows(prepared) -> int:
    from pipelines.ingest import quote_ident

    return sum(
        prepared.con.execute(f"SELECT count(*) FROM {quote_ident(c.dataset)}").fetchone()[0] for c in prepared.contracts
    )


def _spark_engine(
    prepared, ctx, cores: int, work: Path, state: dict, path: Path | None, datasets: Sequence[str]
) -> None:
    """The stages `run_spark_pipeline` runs, each recorded as it ends, so that a measurement too long for one
    session resumes where it stopped: the raw Parquet and the de-identified tables stay in `work`; a resumed run
    takes the index `prepare` built (the same identifiers, tested) instead of building it again on Spark."""
    from pipelines.engines.spark.deidentify import deidentify_parquet
    from pipelines.engines.spark.known import known_identifiers_from_parquet
    from pipelines.engines.spark.pipeline import (
        TablePaths,
        build_models,
        export_raw,
        publish_marts,
        published_marts,
        register_deidentified,
    )
    from pipelines.engines.spark.session import start_session
    from pipelines.resources import DBT_PROJECT_DIR

    name = f"spark_{cores}"
    engine = _engine(state, name)
    paths = TablePaths(str(work / "tables"))
    if not engine["stages"]:  # a new measurement of this engine starts from an empty directory
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    Path(paths.root).mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = _stamp()
    t = time.perf_counter()
    spark = start_session(f"local[{cores}]", scratch=work / "scratch")
    startup = time.perf_counter() - t
    try:
        if "session_start" not in engine["stages"]:
            _record(state, path, name, "session_start", {"seconds": startup, "rows": 0}, stamp)
        rows = _raw_rows(prepared)
        tables = {c.dataset: paths.raw(c.dataset) for c in prepared.contracts}
        if "export_raw" not in engine["stages"] or not all(Path(p).exists() for p in tables.values()):
            stamp = _stamp()
            t = time.perf_counter()
            tables = export_raw(prepared.con, prepared.contracts, paths, spark)
            if "export_raw" not in engine["stages"]:
                _record(state, path, name, "export_raw", {"seconds": time.perf_counter() - t, "rows": rows}, stamp)
        known = prepared.known
        if "known_identifiers" not in engine["stages"]:
            stamp = _stamp()
            t = time.perf_counter()
            known = known_identifiers_from_parquet(spark, tables, prepared.contracts)
            engine.update(identifiers=known.size, index_bytes=known.nbytes)
            _record(state, path, name, "known_identifiers", {"seconds": time.perf_counter() - t, "rows": rows}, stamp)
        for contract in prepared.contracts:
            if contract.dataset not in datasets or not _pending(state, name, contract.dataset):
                continue
            stamp = _stamp()
            t = time.perf_counter()
            try:
                result = deidentify_parquet(
                    spark, tables[contract.dataset], paths.deidentified(contract.dataset), contract, ctx, known=known
                )
            except _gate_errors() as error:
                engine["failed"][contract.dataset] = f"{type(error).__name__}: {error}"
                save_state(path, state)
                continue
            figures = {
                "seconds": time.perf_counter() - t,
                "rows": result.rows_in,
                "phases": result.residual_scan.get("seconds", {}),
                "worker_peak_rss_mib": result.residual_scan.get("worker_peak_rss_mib"),
            }
            _record(state, path, name, f"deidentify {contract.dataset}", figures, stamp)
        done = all(f"deidentify {c.dataset}" in engine["stages"] for c in prepared.contracts)
        if done and not engine["failed"] and "publish" not in engine["stages"]:
            if gone := [c.dataset for c in prepared.contracts if not Path(paths.deidentified(c.dataset)).exists()]:
                raise StateMismatch(
                    f"the de-identified tables of {', '.join(gone)} are gone from {work}: measure {name} again "
                    "(remove its entry from the state file)"
                )
            register_deidentified(spark, [c.dataset for c in prepared.contracts], paths)
            stamp = _stamp()
            t = time.perf_counter()
            manifest = build_models(spark, DBT_PROJECT_DIR, work)
            _record(state, path, name, "dbt_build", {"seconds": time.perf_counter() - t, "rows": 0}, stamp)
            stamp = _stamp()
            t = time.perf_counter()
            marts = publish_marts(spark, published_marts(manifest), paths, work / "marts.duckdb")
            engine["marts"] = marts
            _record(
                state, path, name, "publish", {"seconds": time.perf_counter() - t, "rows": sum(marts.values())}, stamp
            )
    finally:
        spark.stop()


def complete(state: dict, engine: str) -> bool:
    """Every department de-identified (or refused by a gate) on `engine`."""
    e = state["engines"].get(engine)
    return bool(e) and all(f"deidentify {ds}" in e["stages"] or ds in e["failed"] for ds in state["data"])


def _deid_seconds(engine: dict) -> float:
    return sum(s["seconds"] for name, s in engine["stages"].items() if name.startswith("deidentify "))


def _deid_rows(engine: dict) -> int:
    return sum(s["rows"] for name, s in engine["stages"].items() if name.startswith("deidentify "))


def projection(one_core: dict, two_cores: dict, rows_measured: int, index_bytes: int) -> list[dict[str, Any]]:
    """Wall time of de-identification for PROJECTED_ROWS rows per department (4 departments) on C cores:

    T(C) = W x s / (C x e) + broadcast + shuffle + D. W: the measured core-seconds at `local[1]` of the phases that
    run on executors (table scans for distinct values and terms, the Arrow batches, k-anonymity and the write), taken
    as linear in rows (s = projected rows / measured rows); e: the measured 1->2 core efficiency of those phases,
    taken to hold at C cores; the broadcast ships the index (8 bytes per identifier, growing with rows) once to
    each executor; the shuffle moves SHUFFLE_BYTES_PER_ROW per row K_PASSES times at NETWORK_BYTES_PER_S per
    executor; D: the driver's classification wait, as measured (it reads distinct values, which grow slower than rows)."""

    def phases(engine: dict, names: tuple[str, ...]) -> float:
        return sum(
            sum(st.get("phases", {}).get(p, 0) for p in names)
            for n, st in engine["stages"].items()
            if n.startswith("deidentify ")
        )

    parallel = ("table_scans", "batches", "k_anonymity_and_write")
    work1, work2 = phases(one_core, parallel), phases(two_cores, parallel)
    efficiency = min(1.0, work1 / (2 * work2)) if work2 else 1.0
    driver = phases(one_core, ("classification_wait",))
    scale = PROJECTED_ROWS * 4 / rows_measured
    out = []
    for cores in PROJECTED_CORES:
        executors = max(1, cores // CORES_PER_EXECUTOR)
        compute = work1 * scale / (cores * efficiency)
        broadcast = (
            index_bytes * PROJECTED_ROWS * 4 / rows_measured / NETWORK_BYTES_PER_S
        )  # each executor fetches it once, in parallel
        shuffle = PROJECTED_ROWS * 4 * SHUFFLE_BYTES_PER_ROW * K_PASSES / (NETWORK_BYTES_PER_S * executors)
        out.append(
            {
                "cores": cores,
                "efficiency": efficiency,
                "compute_h": compute / 3600,
                "broadcast_s": broadcast,
                "shuffle_s": shuffle,
                "driver_s": driver,
                "total_h": (compute + broadcast + shuffle + driver) / 3600,
            }
        )
    return out


def markers(rows: int) -> tuple[str, str]:
    """Section 9's markers at 100,000 rows per department; a section of its own for any other size."""
    return (
        (BEGIN, END)
        if rows == 100_000
        else (f"<!-- spark-engine-{rows}:begin -->", f"<!-- spark-engine-{rows}:end -->")
    )


def report(state: dict[str, Any]) -> str:
    """The section from the measurement so far; stages not yet measured read '-' and are listed as pending."""
    empty: dict[str, Any] = {"stages": {}, "failed": {}}
    duck, one, two = (state["engines"].get(e, empty) for e in ENGINES)
    rows_per_dept = state["rows"]
    begin, end = markers(rows_per_dept)
    title = (
        "## 9. The Spark engine (local) against DuckDB"
        if rows_per_dept == 100_000
        else f"### 9b. The Spark engine (local) against DuckDB at {rows_per_dept:,} rows per department"
        + (" (the generator's --rows, as in section 5)" if state["base_rows"] == rows_per_dept else "")
    )
    stamps = [st for e in (duck, one, two) for st in e["stages"].values() if "started" in st]
    runs = sorted({(st["started"][:13], st["revision"]) for st in stamps})
    loads = [st["load_before"] for st in stamps]
    machines = sorted({st["machine"] for st in stamps})
    lines = [
        begin,
        title,
        "",
        "Rows per department: " + ", ".join(f"{ds} {d['rows']:,}" for ds, d in sorted(state["data"].items())) + " "
        f"(generator --rows {state['base_rows']:,}, seed {state['seed']}); measured on {', '.join(machines) or '?'}. Spark: `local[1]` and `local[2]`, one "
        "Python worker per core (the analyzer loads once in each); DuckDB: the streaming engine with its NLP worker "
        "processes (2 on this machine). "
        + (
            f"1-minute load average as a stage started: {min(loads):.1f}-{max(loads):.1f} (it includes the bench's own "
            "previous stage)."
            if loads
            else ""
        ),
        "",
        "| stage | rows | DuckDB s | rows/s | Spark 1 core s | rows/s | Spark 2 cores s | rows/s | efficiency 1->2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = ["session_start", "export_raw", "known_identifiers", *(f"deidentify {ds}" for ds in sorted(state["data"]))]
    names += ["dbt_build", "publish"]
    for name in names:
        d, a, b = duck["stages"].get(name), one["stages"].get(name), two["stages"].get(name)
        rows = (a or b or d or {}).get("rows") or state["data"].get(name.removeprefix("deidentify "), {}).get("rows", 0)

        def cell(s):
            if not s:
                return ("-", "-")
            return (f"{s['seconds']:.1f}", f"{s['rows'] / s['seconds']:,.0f}" if s["rows"] and s["seconds"] else "-")

        eff = f"{a['seconds'] / (2 * b['seconds']):.2f}" if a and b and b["seconds"] and rows else "-"
        lines.append(
            f"| {name} | {rows:,} | {' | '.join(cell(d))} | {' | '.join(cell(a))} | {' | '.join(cell(b))} | {eff} |"
        )
    lines.append("")
    finished = {e: complete(state, e) for e in ENGINES}
    if all(finished.values()):
        d1, d2, dd = _deid_seconds(one), _deid_seconds(two), _deid_seconds(duck)
        rows = _deid_rows(one)
        lines += [
            f"De-identification, all departments: DuckDB {dd:.1f} s ({rows / dd:,.0f} rows/s), Spark 1 core {d1:.1f} s "
            f"({rows / d1:,.0f} rows/s), 2 cores {d2:.1f} s ({rows / d2:,.0f} rows/s); parallel efficiency 1->2 cores "
            f"**{d1 / (2 * d2):.2f}** (goal 0.85). Peak memory of an executor's Python worker: "
            f"{_peak(one):,.0f} MiB (1 core), {_peak(two):,.0f} MiB (2 cores). "
            f"Known-identifier index: {one['identifiers']:,} identifiers in {one['index_bytes'] / 1e6:.2f} MB "
            f"({one['index_bytes'] / max(1, one['identifiers']):.0f} bytes each; the set-based index holds ~160).",
            "",
        ]
    else:
        pending = {
            e: [ds for ds in sorted(state["data"]) if _pending(state, e, ds)] for e in ENGINES if not finished[e]
        }
        lines += [
            "**Not yet complete** (the measurement resumes with `--state`; stages measured so far are above): "
            + "; ".join(f"{e}: {', '.join(dss)}" for e, dss in pending.items())
            + ".",
            "",
        ]
    failed = {**duck["failed"], **one["failed"], **two["failed"]}
    if failed:
        lines += [
            "Refused by a gate (not in the figures, and dbt was not run on that engine): "
            + "; ".join(f"{ds}: {msg}" for ds, msg in failed.items()),
            "",
        ]
    measured = [n for n in one["stages"] if n.startswith("deidentify ") and n in two["stages"]]
    if measured:
        lines += [
            "Phases of de-identification on Spark (seconds, 1 core / 2 cores): "
            + "; ".join(
                f"{n.split(' ', 1)[1]}: "
                + ", ".join(
                    f"{k} {one['stages'][n]['phases'].get(k, 0):.1f}/{two['stages'][n]['phases'].get(k, 0):.1f}"
                    for k in one["stages"][n].get("phases", {})
                )
                for n in measured
            )
            + ".",
            "",
        ]
    if finished["spark_1"] and finished["spark_2"] and not (one["failed"] or two["failed"]):
        figures = projection(one, two, _deid_rows(one), one["index_bytes"])
        lines += [
            f"**Projection, {PROJECTED_ROWS:,} rows per department** (de-identification of the four departments):",
            "",
            "| cores | efficiency used | executor work h | broadcast s | shuffle s | driver s | total h |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in figures:
            lines.append(
                f"| {p['cores']} | {p['efficiency']:.2f} | {p['compute_h']:.2f} | {p['broadcast_s']:.1f} | "
                f"{p['shuffle_s']:.1f} | {p['driver_s']:.0f} | {p['total_h']:.2f} |"
            )
        lines += [
            "",
            "Model: T(C) = W x s / (C x e) + broadcast + shuffle + D. W is the measured executor work at `local[1]` "
            "(table scans for distinct values and declared terms, the Arrow batches through the per-batch step, "
            "k-anonymity and the write), s the ratio of projected to measured rows, e the measured 1->2 core "
            "efficiency of that work, assumed to hold at C cores (no further loss from scheduling or stragglers: "
            "optimistic at 256). Also assumed: the same text mix and NER cache hit rate as the demo data (real data "
            "with more distinct texts per batch makes W per row larger), "
            f"{CORES_PER_EXECUTOR} cores per executor, {NETWORK_BYTES_PER_S / 1e9:.0f} GB/s per executor, the index "
            f"growing linearly with rows (8 bytes per identifier, fetched once by each executor), "
            f"{SHUFFLE_BYTES_PER_ROW} bytes per row per k-anonymity pass x {K_PASSES} passes, and the driver's "
            "classification wait D as measured. Measured at small sizes W includes Spark's per-job overheads "
            "(seconds per stage), so the projection is pessimistic there; dbt on the de-identified tables is not "
            "projected (aggregates).",
            "",
        ]
    lines += [
        "_Runs: "
        + "; ".join(f"{started}h UTC at code {revision}" for started, revision in runs)
        + f" (`python -m bench.spark --rows {rows_per_dept} --state ...`; each stage's stamp is in the state file)._",
        end,
    ]
    return "\n".join(lines)


def _peak(engine: dict) -> float:
    return max((s.get("worker_peak_rss_mib") or 0) for s in engine["stages"].values())


def splice(path: Path, section: str, rows: int = 100_000) -> None:
    """Section 9 in place; a section for another size in place, else right after section 9."""
    begin, end = markers(rows)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if rows != 100_000 and begin not in text and END in text:
        path.write_text(text.replace(END, END + "\n\n" + section, 1), encoding="utf-8")
        return
    splice_marked(path, begin, end, section, before_optimizations=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spark", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per department (at least)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--json", type=Path, default=None, help="also write the measurement here")
    parser.add_argument("--workdir", type=Path, default=None, help="generated data and Spark tables (kept if given)")
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="resume the measurement recorded in this JSON file (written after every stage): stages already in it "
        "are not run again, on the same generated data (checked)",
    )
    parser.add_argument(
        "--generator-rows",
        type=int,
        default=None,
        help="the demo generator's --rows (default: the least that gives every department at least --rows rows)",
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"which to run now (of {', '.join(ENGINES)})")
    parser.add_argument("--datasets", default="", help="which departments' tables to de-identify now (default all)")
    args = parser.parse_args(argv)
    _revision()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := sorted(set(engines) - set(ENGINES)):
        parser.error(f"unknown engine(s): {', '.join(unknown)} (choose from {', '.join(ENGINES)})")
    if args.state is not None and args.workdir is None:
        parser.error("--state needs --workdir (the Spark tables of the stages so far live there)")
    os.environ.setdefault("PIPELINES_PSEUDONYM_KEY", "bench-pseudonym-key-" + "7" * 40)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pipelines-bench-spark-"))
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = args.generator_rows or max(
        base_rows_for(ds, args.rows)
        for ds in ("hr_employees", "support_tickets", "finance_expense_claims", "it_security_incidents")
    )
    if base > MAX_ROWS:
        parser.error(
            f"--rows {args.rows:,} in every department needs the generator's --rows {base:,}, above its {MAX_ROWS:,}: "
            "give --generator-rows (the rows per department of section 5's runs: HR and support that many, finance "
            "two claims per employee, IT one incident per two)"
        )
    prepared = prepare(workdir, base, args.seed)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] or [c.dataset for c in prepared.contracts]
    if unknown := sorted(set(datasets) - {c.dataset for c in prepared.contracts}):
        parser.error(f"unknown dataset(s): {', '.join(unknown)}")
    ctx = bench_context()
    settings = {"rows": args.rows, "base_rows": base, "seed": args.seed}
    try:
        state = load_state(args.state, settings, data_fingerprint(prepared))
    except StateMismatch as error:
        parser.exit(2, f"python -m bench.spark: {error}\n")
    for engine in engines:
        if engine == "duckdb":
            _duckdb_engine(prepared, ctx, state, args.state, datasets)
        else:
            cores = int(engine.split("_")[1])
            _spark_engine(prepared, ctx, cores, workdir / engine, state, args.state, datasets)
    splice(args.out, report(state), args.rows)
    if args.json:
        args.json.write_text(json.dumps(state, indent=2, default=str))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote the Spark section ({args.rows:,} rows per department) of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
