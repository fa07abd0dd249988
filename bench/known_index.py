"""The known-identifier index's memory, old (16-byte hashes in Python sets) against compact (8-byte hashes in sorted
NumPy arrays), built from the same raw database in fresh processes.

    python -m bench.known_index --rows 100000,1000000 --out BENCHMARKS.md   (splices its section into the report)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from bench.common import PROJECT_ROOT, machine, md_table, splice_marked

INDEXES = ("KnownIdentifiers", "CompactKnownIdentifiers")


def raw_database(workdir: Path, rows: int, seed: int) -> Path:
    """Generated landing files of every department ingested into one DuckDB file (made once per size)."""
    from demo.generator import generate
    from pipelines.contracts import load_contracts
    from pipelines.ingest import ingest_file, newest_landed_file

    landing, db = workdir / f"landing_{rows}_{seed}", workdir / f"raw_{rows}_{seed}.duckdb"
    if db.exists():
        return db
    if not (landing / ".generated").exists():
        generate(landing, rows=rows, seed=seed)
        (landing / ".generated").touch()
    partial = db.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    con = duckdb.connect(str(partial))
    for contract in load_contracts():
        path = newest_landed_file(landing, contract)
        if path is not None:
            ingest_file(path, contract, con, contract.dataset)
    con.close()
    partial.rename(db)
    return db


def measure_one(db: Path, index: str) -> dict:
    """In this process: the Python memory `index` holds once built from `db` and its peak while building
    (tracemalloc: Python objects and NumPy arrays; DuckDB's own buffers are not counted), identifiers, build time."""
    import tracemalloc

    from pipelines.contracts import load_contracts
    from pipelines.privacy import known as known_module

    con = duckdb.connect(str(db), read_only=True)
    contracts = load_contracts()
    cls = getattr(known_module, index)
    start = time.perf_counter()
    cls_known = known_module.known_identifiers_from_raw(con, contracts, index=cls)  # timed without tracing
    seconds = time.perf_counter() - start
    del cls_known
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    known = known_module.known_identifiers_from_raw(con, contracts, index=cls)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "index": index,
        "identifiers": known.size,
        "seconds": round(seconds, 2),
        "held_bytes": held - base,
        "held_mib": round((held - base) / 2**20, 1),
        "peak_mib": round((peak - base) / 2**20, 1),
        "hash_bytes": getattr(known, "nbytes", None),
    }


def measure(rows: int, workdir: Path, seed: int = 7) -> list[dict]:
    db = raw_database(workdir, rows, seed)
    out = []
    for index in INDEXES:  # one fresh process each
        done = subprocess.run(
            [sys.executable, "-m", "bench.known_index", "--one", str(db), index],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        out.append({"rows": rows, **json.loads(done.stdout.strip().splitlines()[-1])})
    return out


BEGIN, END = "<!-- known-index:begin -->", "<!-- known-index:end -->"
TITLE = "## Known-identifier index: memory on both engines"


def markdown(results: list[dict]) -> str:
    rows = [
        [
            f"{r['rows']:,}",
            r["index"],
            f"{r['identifiers']:,}",
            f"{r['seconds']:.1f}",
            f"{r['held_mib']:,.1f}",
            f"{r['held_mib'] * 2**20 / r['identifiers']:.0f}" if r["identifiers"] else "-",
            f"{r['peak_mib']:,.1f}",
        ]
        for r in results
    ]
    header = [
        "rows per department",
        "index",
        "identifiers",
        "build (s)",
        "held (MiB)",
        "bytes per identifier held",
        "peak while building (MiB)",
    ]
    m = machine()
    return "\n".join(
        [
            BEGIN,
            TITLE,
            "",
            "Every department's direct identifiers and join keys (and name parts joined as full names), indexed from "
            "the same raw DuckDB database (demo generator, seed 7) in a fresh process per index: the old index "
            "(16-byte keyed BLAKE2b hashes in Python sets) against the compact one both engines use now (8-byte keyed "
            "hashes in sorted NumPy arrays; the Spark engine broadcasts it). Held: Python memory the built index "
            "keeps (tracemalloc; allocator overhead and DuckDB's buffers not counted, so RSS is higher); peak: the "
            "high-water mark while building. Build time without tracing, on a shared machine (read it loosely).",
            "",
            md_table(header, rows, "llrrrrr"),
            "",
            f"_Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB; `python -m bench.known_index`._",
            END,
        ]
    )


def splice(path: Path, section: str) -> None:
    splice_marked(path, BEGIN, END, section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.known_index", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000", help="comma-separated generator --rows")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/known-index"))
    parser.add_argument("--out", type=Path, default=None, help="splice the section into this report")
    parser.add_argument("--json", type=Path, default=None, help="results as JSON (or read them back with --render)")
    parser.add_argument("--render", action="store_true", help="render --json's results, measuring nothing")
    parser.add_argument("--one", nargs=2, metavar=("DB", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(Path(args.one[0]), args.one[1])))
        return
    if args.render:
        results = json.loads(args.json.read_text())
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = [r for rows in args.rows.split(",") for r in measure(int(rows), args.workdir)]
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    section = markdown(results)
    if args.out:
        splice(args.out, section)
    print(section)


if __name__ == "__main__":
    main()
