"""Value generalization hierarchies (ARX format) and builders for common quasi-identifiers.

A hierarchy maps every raw value (level 0) to a coarser label at each higher level; the
last level is usually ``*`` (fully suppressed). Levels must nest: values that share a
label at level ``l`` share a label at every level above ``l``. The de-identification
engine relies on that nesting for its monotonicity-based pruning.

Raw values are matched by a canonical string key (see ``value_keys``) so that a hierarchy
read from a CSV file matches integer, string or datetime columns alike. Error messages
never echo raw values or labels, because they can be personal data (postcodes, dates).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "TOP",
    "Hierarchy",
    "age_bands",
    "date_hierarchy",
    "hierarchy_from_mapping",
    "load_arx_hierarchies",
    "load_hierarchy",
    "numeric_buckets",
    "postcode_hierarchy",
    "value_keys",
]

TOP = "*"


def value_keys(values: pd.Series) -> np.ndarray:
    """Canonical string keys for ``values`` (object array; ``None`` where null)."""
    values = pd.Series(values)
    mask = values.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        keys = _datetime_keys(values)
    elif pd.api.types.is_float_dtype(values.dtype) and _all_integral(values[~mask]):
        # Floats are usually integers widened by a null (e.g. ages); match "39", not "39.0".
        keys = values.astype("Int64").astype(str)
    else:
        keys = values.astype(str)
    out = keys.to_numpy(dtype=object, na_value=None)
    out[mask] = None
    return out


def _datetime_keys(values: pd.Series) -> pd.Series:
    """ISO keys: dates as YYYY-MM-DD, timestamps with a time part as YYYY-MM-DDTHH:MM:SS."""
    present = values.dropna()
    if present.dt.tz is not None:
        present = present.dt.tz_localize(None)
    has_time = bool((present != present.dt.normalize()).any())
    fmt = "%Y-%m-%dT%H:%M:%S" if has_time else "%Y-%m-%d"
    return values.dt.strftime(fmt)


def _all_integral(values: pd.Series) -> bool:
    """True when every (non-null) float is a whole number."""
    arr = values.to_numpy(dtype=float)
    return bool(np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr)))


class Hierarchy:
    """An immutable generalization hierarchy: raw value -> label per level."""

    __slots__ = ("_codes", "_index", "_labels", "_name")

    def __init__(self, name: str, rows: Sequence[Sequence[str]]) -> None:
        """Build and validate a hierarchy from rows ``(raw, level1, ..., top)``."""
        if not name:
            raise ValueError("a hierarchy needs a name")
        table = _validated_table(name, rows)
        self._name = name
        self._labels = tuple(table[:, level].copy() for level in range(table.shape[1]))
        self._index = pd.Index(self._labels[0], dtype=object)
        # Integer label codes per level, so the engine never compares strings in its hot loop.
        self._codes = tuple(pd.factorize(labels)[0].astype(np.int64) for labels in self._labels)

    @property
    def name(self) -> str:
        """Name of the hierarchy (normally the column it generalizes)."""
        return self._name

    @property
    def num_levels(self) -> int:
        """Number of levels including the raw level 0 (ARX's 'height')."""
        return len(self._labels)

    @property
    def max_level(self) -> int:
        """Highest valid level."""
        return len(self._labels) - 1

    @property
    def values(self) -> tuple[str, ...]:
        """The raw values (level 0 keys) covered by the hierarchy."""
        return tuple(self._labels[0])

    @property
    def top_label(self) -> str | None:
        """The single label of the highest level, or None if that level has several."""
        top = pd.unique(self._labels[-1])
        return str(top[0]) if len(top) == 1 else None

    def mapping(self, level: int) -> dict[str, str]:
        """Raw value -> label at ``level``."""
        self._check_level(level)
        return dict(zip(self._labels[0], self._labels[level], strict=True))

    def labels(self, level: int) -> tuple[str, ...]:
        """Distinct labels at ``level`` in hierarchy order."""
        self._check_level(level)
        return tuple(pd.unique(self._labels[level]))

    def generalize(self, values: pd.Series, level: int) -> pd.Series:
        """Replace each value by its label at ``level`` (nulls stay null below the top level)."""
        self._check_level(level)
        values = pd.Series(values)
        codes, uniques = pd.factorize(values)  # nulls -> -1; work on distinct values only
        counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
        rows = self.lookup(pd.Series(uniques, dtype=values.dtype), column=values.name, counts=counts)
        if level == 0:
            return values.copy()
        labels = self._labels[level][rows]
        # Index -1 (null) picks the appended entry: null below the top, the root label at it.
        null_label = self.top_label if level == self.max_level else None
        out = np.append(labels, np.array([null_label], dtype=object))[codes]
        return pd.Series(out, index=values.index, name=values.name)

    def lookup(self, values: pd.Series, column: object = None, counts: np.ndarray | None = None) -> np.ndarray:
        """Row position of each value (-1 for nulls); ValueError with counts only if unknown."""
        # ``counts`` (records behind each value) lets the error report records, not only
        # distinct values, without ever naming a value.
        keys = value_keys(values)
        present = np.array([key is not None for key in keys], dtype=bool)
        rows = np.full(len(keys), -1, dtype=np.int64)
        if present.any():
            rows[present] = self._index.get_indexer(keys[present])
        unknown = present & (rows < 0)
        if unknown.any():
            where = f" in column {column!r}" if column is not None else ""
            records = "" if counts is None else f"{int(np.asarray(counts)[unknown].sum())} record(s), "
            raise ValueError(
                f"hierarchy {self._name!r}: {records}{int(unknown.sum())} distinct value(s)"
                f"{where} not covered by the hierarchy (values not shown: they may be personal data)"
            )
        return rows

    def level_codes(self, level: int) -> np.ndarray:
        """Integer code of each hierarchy row's label at ``level`` (internal fast path)."""
        self._check_level(level)
        return self._codes[level]

    def _check_level(self, level: int) -> None:
        """Reject levels outside ``0..max_level``."""
        if not isinstance(level, (int, np.integer)) or not 0 <= level <= self.max_level:
            raise ValueError(f"hierarchy {self._name!r}: level {level!r} outside 0..{self.max_level}")

    def __len__(self) -> int:
        """Number of raw values covered."""
        return len(self._labels[0])

    def __repr__(self) -> str:
        """Summary without values (they may be personal data)."""
        return f"Hierarchy(name={self._name!r}, num_levels={self.num_levels}, values={len(self)})"


def _validated_table(name: str, rows: Sequence[Sequence[str]]) -> np.ndarray:
    """Rows as a 2-D object array after checking shape, uniqueness and nesting."""
    rows = [tuple(str(cell) for cell in row) for row in rows]
    if not rows:
        raise ValueError(f"hierarchy {name!r} has no rows")
    width = len(rows[0])
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"hierarchy {name!r}: row {number} has {len(row)} levels, row 1 has {width}")
    table = np.array(rows, dtype=object).reshape(len(rows), width)
    duplicated = int(pd.Index(table[:, 0]).duplicated().sum())
    if duplicated:
        raise ValueError(f"hierarchy {name!r}: {duplicated} raw value(s) appear more than once")
    for level in range(1, width - 1):
        # Each label must map to exactly one parent label, otherwise generalizing a column
        # could split a group and k-anonymity would no longer be monotone over the lattice.
        parents = pd.DataFrame({"child": table[:, level], "parent": table[:, level + 1]})
        if (parents.groupby("child", sort=False)["parent"].nunique() > 1).any():
            raise ValueError(
                f"hierarchy {name!r}: level {level + 1} does not nest level {level} "
                "(a group at the lower level is split at the higher one)"
            )
    return table


def load_hierarchy(
    path: str | Path, name: str | None = None, *, delimiter: str = ";", encoding: str = "utf-8"
) -> Hierarchy:
    """Load an ARX hierarchy CSV (``value;level1;...;*``, no header)."""
    path = Path(path)
    with path.open(newline="", encoding=encoding) as handle:
        rows = [[cell.strip("\r") for cell in row] for row in csv.reader(handle, delimiter=delimiter) if row]
    return Hierarchy(name or path.stem, rows)


def load_arx_hierarchies(directory: str | Path, dataset: str) -> dict[str, Hierarchy]:
    """Load every ``<dataset>_hierarchy_<column>.csv`` in ``directory``, keyed by column."""
    pattern = re.compile(rf"^{re.escape(dataset)}_hierarchy_(.+)\.csv$")
    found = {}
    for path in sorted(Path(directory).iterdir()):
        match = pattern.match(path.name)
        if match:
            found[match.group(1)] = load_hierarchy(path, name=match.group(1))
    if not found:
        raise ValueError(f"no hierarchy files for dataset {dataset!r} in {directory}")
    return found


def _interval_label(low: float, width: float, integral: bool) -> str:
    """'lo-hi' (inclusive) for integer bands, '[lo, hi)' for real-valued ones."""
    if integral:
        return f"{int(low)}-{int(low + width - 1)}"
    return f"[{low:g}, {low + width:g})"


def _bucket_rows(
    keys: Sequence[str], numbers: np.ndarray, widths: Sequence[float], origin: float, integral: bool, top: str
) -> list[list[str]]:
    """Rows for interval hierarchies: one level per width, then the top."""
    levels = []
    for width in widths:
        lows = origin + np.floor((numbers - origin) / width) * width
        levels.append([_interval_label(low, width, integral) for low in lows])
    return [[key, *(level[i] for level in levels), top] for i, key in enumerate(keys)]


def _check_widths(widths: Sequence[float]) -> None:
    """Widths must be positive, increasing and each a multiple of the previous (nesting)."""
    if not widths:
        raise ValueError("at least one interval width is required")
    if any(w <= 0 for w in widths):
        raise ValueError("interval widths must be positive")
    for smaller, larger in zip(widths, widths[1:]):
        ratio = larger / smaller
        if larger <= smaller or not math.isclose(ratio, round(ratio)):
            raise ValueError("each interval width must be a larger multiple of the previous one")


def numeric_buckets(
    values: Iterable[float], widths: Sequence[float], *, name: str, origin: float = 0.0, top: str = TOP
) -> Hierarchy:
    """Interval hierarchy over the observed ``values``: one level per bucket width, then ``*``."""
    _check_widths(widths)
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values)
    series = pd.to_numeric(series.dropna().drop_duplicates(), errors="raise")
    if series.empty:
        raise ValueError(f"hierarchy {name!r}: no non-null values to build buckets from")
    numbers = series.to_numpy(dtype=float)
    integral = _all_integral(series) and all(float(w).is_integer() for w in widths) and float(origin).is_integer()
    keys = value_keys(series.astype("Int64") if integral else series)
    return Hierarchy(name, _bucket_rows(list(keys), numbers, widths, origin, integral, top))


def age_bands(
    widths: Sequence[int] = (5, 10, 20), *, minimum: int = 0, maximum: int = 120, name: str = "age", top: str = TOP
) -> Hierarchy:
    """Integer age hierarchy over ``minimum..maximum``: bands of each width, then ``*``."""
    if minimum > maximum:
        raise ValueError("minimum age must not exceed maximum age")
    return numeric_buckets(range(minimum, maximum + 1), widths, name=name, origin=minimum, top=top)


def date_hierarchy(values: Iterable[object], *, name: str, top: str = TOP) -> Hierarchy:
    """Date hierarchy over the observed ``values``: day -> month (YYYY-MM) -> year -> ``*``."""
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values)
    series = series.dropna().drop_duplicates()
    if series.empty:
        raise ValueError(f"hierarchy {name!r}: no non-null values to build dates from")
    # Keys come from the values as given, so generalize() matches the same column later.
    keys = value_keys(series)
    try:
        dates = pd.to_datetime(series, errors="raise")
    except (ValueError, TypeError):
        raise ValueError(f"hierarchy {name!r}: some values are not dates") from None
    months = dates.dt.strftime("%Y-%m").tolist()
    years = dates.dt.strftime("%Y").tolist()
    rows = [[key, month, year, top] for key, month, year in zip(keys, months, years, strict=True)]
    return Hierarchy(name, _dedupe_keys(name, rows))


def _dedupe_keys(name: str, rows: list[list[str]]) -> list[list[str]]:
    """Drop rows whose key repeats with identical labels; conflicting repeats are an error."""
    seen: dict[str, list[str]] = {}
    for row in rows:
        previous = seen.setdefault(row[0], row)
        if previous != row:
            raise ValueError(f"hierarchy {name!r}: two values share a key but not their labels")
    return list(seen.values())


def postcode_hierarchy(
    values: Iterable[object], *, name: str, keep: Sequence[int] | None = None, pad: str = "*", top: str = TOP
) -> Hierarchy:
    """Postcode hierarchy: keep the first ``n`` characters per level, pad the rest with ``pad``."""
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values)
    series = series.dropna().drop_duplicates()
    if series.empty:
        raise ValueError(f"hierarchy {name!r}: no non-null values to build postcodes from")
    keys = [str(key) for key in value_keys(series)]
    longest = max(len(key) for key in keys)
    keep = tuple(range(longest - 1, 0, -1)) if keep is None else tuple(keep)
    if any(n < 0 for n in keep) or any(a <= b for a, b in zip(keep, keep[1:])):
        raise ValueError("keep must be non-negative and strictly decreasing")
    # Padding to each code's own length keeps codes of different lengths apart, and
    # prefixes always nest, so the levels are a valid hierarchy.
    rows = [[key, *(key[:n] + pad * max(len(key) - n, 0) for n in keep), top] for key in keys]
    return Hierarchy(name, rows)


def hierarchy_from_mapping(name: str, levels: Sequence[Mapping[str, str]]) -> Hierarchy:
    """Build a hierarchy from per-level ``raw -> label`` mappings (same keys at every level)."""
    if not levels:
        raise ValueError(f"hierarchy {name!r} needs at least one generalized level")
    keys = list(levels[0])
    if any(set(level) != set(keys) for level in levels):
        raise ValueError(f"hierarchy {name!r}: every level must map the same raw values")
    return Hierarchy(name, [[key, *(level[key] for level in levels)] for key in keys])
