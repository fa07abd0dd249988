"""Exact re-identification risk of an in-memory frame and optimal full-domain generalization (ARX-compatible).

Tables in DuckDB (the gates, marts and metadata) are measured by `pipelines.privacy.disclosure` in SQL; this module
works on data frames already in memory with the integer encoding the lattice search needs, and `risk_report` is the
numpy reference `tests/test_disclosure.py` holds the SQL against (same `RiskReport`).
Risk follows the prosecutor model used by the ARX Data Anonymization Tool: a record's risk
is 1 / size of its equivalence class (records sharing all quasi-identifier values).

``find_minimal_generalization`` searches the whole generalization lattice (every
combination of hierarchy levels) for the transformation with the lowest loss under ARX's
monotonic non-uniform entropy (the measure ARX's own k-anonymity tests on adult.csv use,
``Metric.createPrecomputedEntropyMetric(0.1, true)``), pruning with the monotonicity of
k-anonymity with a suppression limit.

Speed: columns are encoded to integer codes once, per-level code mappings are
precomputed, identical raw quasi-identifier combinations are collapsed into weighted rows,
and each lattice node is checked with a mixed-radix int64 key plus ``np.bincount``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pipelines.privacy.disclosure import RiskReport
from pipelines.privacy.hierarchies import TOP, Hierarchy

__all__ = [
    "LOSS_DEFINITION",
    "LOSS_MEASURE",
    "SUPPRESSED_COLUMN",
    "GeneralizationResult",
    "NoGeneralizationError",
    "RiskReport",
    "apply_generalization",
    "find_minimal_generalization",
    "generalization_loss",
    "risk_report",
]

LOSS_MEASURE = "non_uniform_entropy"
LOSS_DEFINITION = (
    "ARX non-uniform entropy, monotonic variant, SUM aggregate, gs-factor 0.5 "
    "(MetricMDNUEntropyPrecomputed): for each quasi-identifier q at level l, "
    "loss_q(l) = -sum over raw values v of count(v) * log2(count(v) / count(g_l(v))), "
    "counted over all input records (suppressed records add no extra loss); each loss_q "
    "is truncated to 10 decimals and the node's loss is the sum over quasi-identifiers. "
    "Ties: lower loss, then lower lattice height (sum of levels), then the "
    "lexicographically smallest level vector."
)
SUPPRESSED_COLUMN = "suppressed"

# Mixed-radix keys stay below this so int64 never overflows; wider keys are densified first.
_KEY_LIMIT = 1 << 62
# Count with a direct bincount while the key space is at most this many times the rows.
_DENSE_FACTOR = 4
# The lattice is materialized (losses, state); refuse sizes that would exhaust memory.
MAX_LATTICE_NODES = 5_000_000
# ARX truncates each per-attribute loss to 10 decimals before comparing transformations.
_ROUND_FACTOR = 1e10
_LN2 = math.log(2.0)


class NoGeneralizationError(ValueError):
    """No transformation in the lattice meets k within the suppression limit."""


# ---------------------------------------------------------------------------------------
# Shared encoding helpers


def _as_names(columns: str | Iterable[str]) -> tuple[str, ...]:
    """Column names as a tuple (a lone string is one name, not characters)."""
    return (columns,) if isinstance(columns, str) else tuple(columns)


def _require_columns(df: pd.DataFrame, columns: Sequence[str], role: str) -> None:
    """ValueError naming the first column of ``columns`` missing from ``df`` (or repeated)."""
    if len(set(columns)) != len(columns):
        raise ValueError(f"{role} columns are listed more than once: {list(columns)}")
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"{role} column {column!r} is not in the data frame")


def _require_rows(df: pd.DataFrame) -> None:
    """Risk is undefined without records."""
    if len(df) == 0:
        raise ValueError("the data frame is empty: risk needs at least one record")


def _column_codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Dense int64 codes in order of first appearance; nulls are their own category."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64, copy=False), len(uniques)


def _densify(key: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber arbitrary int64 keys to 0..n-1 (first-appearance order)."""
    codes, uniques = pd.factorize(key)
    return codes.astype(np.int64, copy=False), len(uniques)


def _combine(codes: Sequence[np.ndarray], cards: Sequence[int]) -> tuple[np.ndarray, int]:
    """Mixed-radix int64 key over several code columns, with its key-space size."""
    key = codes[0].astype(np.int64, copy=True)
    span = int(cards[0])
    for column, card in zip(codes[1:], cards[1:]):
        if span * card >= _KEY_LIMIT:
            key, span = _densify(key)
        key *= card
        key += column
        span *= int(card)
    return key, span


def _group_ids(codes: Sequence[np.ndarray], cards: Sequence[int]) -> tuple[np.ndarray, int]:
    """Dense group id per row for the combination of code columns."""
    key, span = _combine(codes, cards)
    if span <= _DENSE_FACTOR * len(key) + 1024:
        # Small key space: renumber via a presence table, cheaper than hashing.
        present = np.zeros(span, dtype=bool)
        present[key] = True
        renumber = np.cumsum(present) - 1
        return renumber[key], int(present.sum())
    return _densify(key)


def _group_sizes(key: np.ndarray, span: int, weights: np.ndarray | None) -> np.ndarray:
    """Records per non-empty group (weights = records behind each row)."""
    if span > _DENSE_FACTOR * len(key) + 1024:
        key, span = _densify(key)
    sizes = np.bincount(key, weights=weights, minlength=span)
    sizes = sizes[sizes > 0]
    return sizes.astype(np.int64) if weights is not None else sizes


# ---------------------------------------------------------------------------------------
# Risk report


def _distinct_l(class_ids: np.ndarray, n_classes: int, values: pd.Series) -> int:
    """Smallest number of distinct sensitive values in any class (nulls count as a value)."""
    codes, card = _column_codes(values)
    pairs, _ = _group_ids([class_ids, codes], [n_classes, card])
    first = np.unique(pairs, return_index=True)[1]
    per_class = np.bincount(class_ids[first], minlength=n_classes)
    return int(per_class.min())


def risk_report(
    df: pd.DataFrame,
    quasi_identifiers: str | Sequence[str],
    sensitive_attributes: str | Sequence[str] = (),
    risk_threshold: float = 0.2,
    k: int | None = None,
) -> RiskReport:
    """Equivalence classes, k, distinct l-diversity and prosecutor risk of ``df``."""
    qis = _as_names(quasi_identifiers)
    sensitive = _as_names(sensitive_attributes)
    if not qis:
        raise ValueError("at least one quasi-identifier is required")
    _require_columns(df, qis, "quasi-identifier")
    _require_columns(df, sensitive, "sensitive")
    overlap = set(qis) & set(sensitive)
    if overlap:
        raise ValueError(f"columns {sorted(overlap)} cannot be both quasi-identifier and sensitive")
    if not 0.0 <= risk_threshold <= 1.0:
        raise ValueError("risk_threshold must be between 0 and 1")
    if k is not None and k < 1:
        raise ValueError("k must be at least 1")
    _require_rows(df)

    encoded = [_column_codes(df[column]) for column in qis]
    class_ids, n_classes = _group_ids([c for c, _ in encoded], [n for _, n in encoded])
    sizes = np.bincount(class_ids, minlength=n_classes)
    records = len(df)
    smallest = int(sizes.min())
    # Risk 1/size > threshold  <=>  size < 1/threshold; compare in floats as ARX does.
    at_risk = int(sizes[(1.0 / sizes) > risk_threshold].sum())
    below = sizes < k if k is not None else None
    return RiskReport(
        records=records,
        quasi_identifiers=qis,
        equivalence_classes=n_classes,
        k=smallest,
        prosecutor_risk_average=n_classes / records,
        prosecutor_risk_highest=1.0 / smallest,
        risk_threshold=float(risk_threshold),
        records_at_risk_share=at_risk / records,
        sample_uniqueness=int(np.count_nonzero(sizes == 1)) / records,
        l_diversity={s: _distinct_l(class_ids, n_classes, df[s]) for s in sensitive},
        target_k=k,
        classes_below_k=None if below is None else int(below.sum()),
        records_below_k=None if below is None else int(sizes[below].sum()),
    )


# ---------------------------------------------------------------------------------------
# Generalization lattice


@dataclass(frozen=True)
class GeneralizationResult:
    """Optimal full-domain generalization found by ``find_minimal_generalization``."""

    quasi_identifiers: tuple[str, ...]
    levels: dict[str, int]
    k: int
    max_suppression: float
    records: int
    equivalence_classes: int  # classes among retained records (all of size >= k)
    records_suppressed: int  # records in classes smaller than k, removed on output
    classes_suppressed: int
    loss: float
    loss_measure: str
    loss_definition: str
    nodes_evaluated: int  # lattice nodes whose classes were counted on the data
    lattice_size: int
    elapsed_seconds: float

    @property
    def level_vector(self) -> tuple[int, ...]:
        """Levels in quasi-identifier order (ARX's transformation array)."""
        return tuple(self.levels[q] for q in self.quasi_identifiers)

    @property
    def suppressed_share(self) -> float:
        """Share of input records suppressed."""
        return self.records_suppressed / self.records

    def to_metadata(self) -> dict[str, object]:
        """Plain JSON-compatible dict (e.g. for Dagster asset metadata)."""
        data = asdict(self)
        data["quasi_identifiers"] = list(self.quasi_identifiers)
        data["levels"] = {q: int(level) for q, level in self.levels.items()}
        data["suppressed_share"] = self.suppressed_share
        return data


@dataclass(frozen=True)
class _Encoded:
    """Quasi-identifiers as integer codes per level over distinct raw combinations."""

    records: int
    weights: np.ndarray  # records behind each distinct raw combination
    codes: tuple[tuple[np.ndarray, ...], ...]  # [qi][level] -> code per combination
    cards: tuple[tuple[int, ...], ...]  # [qi][level] -> number of distinct codes
    losses: tuple[np.ndarray, ...]  # [qi] -> entropy loss per level


def _level_codes(series: pd.Series, hierarchy: Hierarchy) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Raw codes per row, plus per level the dense code of each raw value and the code count."""
    raw, uniques = pd.factorize(series, use_na_sentinel=False)
    rows = hierarchy.lookup(
        pd.Series(uniques, dtype=series.dtype), column=series.name, counts=np.bincount(raw, minlength=len(uniques))
    )
    is_null = rows < 0  # lookup() has already rejected unknown non-null values
    per_level, cards = [], []
    for level in range(hierarchy.num_levels):
        if level == 0:
            codes = np.arange(len(uniques), dtype=np.int64)
        else:
            label_codes = hierarchy.level_codes(level)
            # Same null rule as Hierarchy.generalize: own category, merged only at a single root.
            at_root = level == hierarchy.max_level and hierarchy.top_label is not None
            null_code = label_codes[0] if at_root else len(hierarchy)
            codes = np.where(is_null, null_code, label_codes[np.maximum(rows, 0)])
            codes, _ = _densify(codes)
        per_level.append(codes)
        cards.append(int(codes.max()) + 1)
    return raw.astype(np.int64, copy=False), per_level, cards


def _entropy_losses(raw: np.ndarray, per_level: Sequence[np.ndarray]) -> np.ndarray:
    """ARX non-uniform entropy loss of one attribute at every level."""
    counts = np.bincount(raw).astype(float)  # a: records per raw value, first-appearance order
    losses = np.zeros(len(per_level))
    for level, parent in enumerate(per_level[1:], start=1):
        group = np.bincount(parent, weights=counts)[parent]  # b: records per generalized value
        # Sequential (cumsum) summation and log(x)/ln 2 mirror ARX's loop bit for bit.
        total = np.cumsum(counts * (np.log(counts / group) / _LN2))[-1]
        value = -total if total != 0.0 else total
        losses[level] = math.floor(value * _ROUND_FACTOR) / _ROUND_FACTOR
    return losses


def _encode(df: pd.DataFrame, qis: Sequence[str], hierarchies: Mapping[str, Hierarchy]) -> _Encoded:
    """Encode quasi-identifiers once; collapse identical raw combinations into weights."""
    raws, levels, cards, losses = [], [], [], []
    for qi in qis:
        raw, per_level, level_cards = _level_codes(df[qi], hierarchies[qi])
        raws.append(raw)
        levels.append(per_level)
        cards.append(level_cards)
        losses.append(_entropy_losses(raw, per_level))
    combo, _ = _group_ids(raws, [c[0] for c in cards])
    first = np.unique(combo, return_index=True)[1]
    weights = np.bincount(combo).astype(float)
    codes = tuple(tuple(mapping[raw[first]] for mapping in per_level) for raw, per_level in zip(raws, levels))
    return _Encoded(len(df), weights, codes, tuple(map(tuple, cards)), tuple(losses))


def _class_sizes(encoded: _Encoded, node: Sequence[int]) -> np.ndarray:
    """Equivalence class sizes of the data generalized to ``node``."""
    codes = [encoded.codes[i][level] for i, level in enumerate(node)]
    cards = [encoded.cards[i][level] for i, level in enumerate(node)]
    key, span = _combine(codes, cards)
    return _group_sizes(key, span, encoded.weights)


def _lattice_losses(losses: Sequence[np.ndarray], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Loss and height of every lattice node, as arrays of ``shape``."""
    total = np.zeros(shape)
    height = np.zeros(shape, dtype=np.int64)
    for axis, table in enumerate(losses):
        view = [1] * len(shape)
        view[axis] = shape[axis]
        # Add attribute by attribute, in order, like ARX's SUM aggregate (same rounding).
        total = total + table.reshape(view)
        height = height + np.arange(shape[axis]).reshape(view)
    return total, height


def _validate_search(
    df: pd.DataFrame, qis: Sequence[str], hierarchies: Mapping[str, Hierarchy], k: int, max_suppression: float
) -> None:
    """Argument checks shared by the search and apply functions."""
    if not qis:
        raise ValueError("at least one quasi-identifier is required")
    _require_columns(df, qis, "quasi-identifier")
    for qi in qis:
        if qi not in hierarchies:
            raise ValueError(f"no hierarchy given for quasi-identifier {qi!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError("k must be a positive integer")
    if not 0.0 <= max_suppression <= 1.0:
        raise ValueError("max_suppression must be between 0 and 1")
    _require_rows(df)


def _max_outliers(records: int, max_suppression: float) -> int:
    """Records that may be suppressed (ARX: floor(limit * records))."""
    return math.floor(max_suppression * records)


class _Search:
    """Best-first lattice search with monotonicity pruning (state: +1 anonymous, -1 not)."""

    def __init__(self, encoded: _Encoded, shape: tuple[int, ...], k: int, max_outliers: int) -> None:
        """Prepare an empty classification of the lattice."""
        self.encoded = encoded
        self.k = k
        self.max_outliers = max_outliers
        self.state = np.zeros(shape, dtype=np.int8)
        self.top = tuple(n - 1 for n in shape)
        self.checks = 0

    def is_anonymous(self, node: tuple[int, ...]) -> bool:
        """Check one node, reusing and propagating what monotonicity implies."""
        known = self.state[node]
        if known:
            return bool(known > 0)
        self.checks += 1
        sizes = _class_sizes(self.encoded, node)
        anonymous = int(sizes[sizes < self.k].sum()) <= self.max_outliers
        # Generalizing merges classes, so records below k never increase: anonymous nodes
        # make their whole up-set anonymous, failing nodes their whole down-set failing.
        if anonymous:
            self.state[tuple(slice(level, None) for level in node)] = 1
        else:
            self.state[tuple(slice(0, level + 1) for level in node)] = -1
        return anonymous

    def climb(self, node: tuple[int, ...], dims: Sequence[int]) -> None:
        """Raise a failing node's levels to a maximal failing node, pruning its down-set."""
        # Binary search per dimension; the result is maximal because raising a level never
        # turns an anonymous node back into a failing one.
        current = list(node)
        for dim in dims:
            low, high = current[dim], self.top[dim]
            while low < high:
                middle = (low + high + 1) // 2
                candidate = tuple(current[:dim] + [middle] + current[dim + 1 :])
                if self.is_anonymous(candidate):
                    high = middle - 1
                else:
                    low = middle
            current[dim] = low


def find_minimal_generalization(
    df: pd.DataFrame,
    quasi_identifiers: str | Sequence[str],
    hierarchies: Mapping[str, Hierarchy],
    k: int,
    max_suppression: float = 0.0,
) -> GeneralizationResult:
    """Lowest-loss full-domain generalization meeting k-anonymity within the suppression limit."""
    started = time.perf_counter()
    qis = _as_names(quasi_identifiers)
    _validate_search(df, qis, hierarchies, k, max_suppression)
    shape = tuple(hierarchies[qi].num_levels for qi in qis)
    lattice_size = math.prod(shape)
    if lattice_size > MAX_LATTICE_NODES:
        raise ValueError(
            f"generalization lattice has {lattice_size} nodes (limit {MAX_LATTICE_NODES}); "
            "use fewer quasi-identifiers or hierarchy levels"
        )
    encoded = _encode(df, qis, hierarchies)
    search = _Search(encoded, shape, int(k), _max_outliers(len(df), max_suppression))
    if not search.is_anonymous(search.top):
        raise NoGeneralizationError(f"no generalization reaches k={k} within {max_suppression:.2%} suppression")

    loss, height = _lattice_losses(encoded.losses, shape)
    # The loss is known for every node before touching the data, so visit nodes in final
    # ranking order (loss, height, then flat index = lexicographic levels via stable sort):
    # the first anonymous node is the optimum. The only data work is proving nodes fail.
    order = np.lexsort((height.ravel(), loss.ravel()))
    # Climb cheap dimensions first: maximal failing nodes then cover more low-loss nodes.
    per_level = [table[-1] / max(len(table) - 1, 1) for table in encoded.losses]
    dims = [d for d in np.argsort(per_level, kind="stable") if shape[d] > 1]
    flat_state = search.state.reshape(-1)  # view: reflects pruning done through search.state
    best = None
    for index in order:
        if flat_state[index] < 0:
            continue
        node = tuple(int(x) for x in np.unravel_index(index, shape))
        if search.is_anonymous(node):
            best = node
            break
        search.climb(node, dims)

    sizes = _class_sizes(encoded, best)
    small = sizes < k
    return GeneralizationResult(
        quasi_identifiers=qis,
        levels=dict(zip(qis, best, strict=True)),
        k=int(k),
        max_suppression=float(max_suppression),
        records=len(df),
        equivalence_classes=int(np.count_nonzero(~small)),
        records_suppressed=int(sizes[small].sum()),
        classes_suppressed=int(np.count_nonzero(small)),
        loss=float(loss[best]),
        loss_measure=LOSS_MEASURE,
        loss_definition=LOSS_DEFINITION,
        nodes_evaluated=search.checks,
        lattice_size=lattice_size,
        elapsed_seconds=time.perf_counter() - started,
    )


def generalization_loss(df: pd.DataFrame, hierarchies: Mapping[str, Hierarchy], levels: Mapping[str, int]) -> float:
    """Non-uniform entropy loss (``LOSS_DEFINITION``) of generalizing ``df`` to ``levels``."""
    qis = tuple(levels)
    _validate_search(df, qis, hierarchies, 1, 0.0)
    encoded = _encode(df, qis, hierarchies)
    total = 0.0
    for qi, table in zip(qis, encoded.losses):
        hierarchies[qi].level_codes(levels[qi])  # validates the level range
        total += float(table[levels[qi]])
    return total


def apply_generalization(
    df: pd.DataFrame,
    hierarchies: Mapping[str, Hierarchy],
    levels: Mapping[str, int],
    k: int,
    max_suppression: float = 0.0,
    *,
    suppressed: Literal["drop", "flag"] = "drop",
) -> pd.DataFrame:
    """Generalize the quasi-identifiers to ``levels`` and suppress records in classes below k."""
    # "drop" removes suppressed records; "flag" keeps them with every quasi-identifier set
    # to the hierarchy root (as ARX outputs them) plus a boolean SUPPRESSED_COLUMN. Needing
    # more suppression than allowed is an error, so the output always meets k.
    qis = tuple(levels)
    _validate_search(df, qis, hierarchies, k, max_suppression)
    if suppressed not in ("drop", "flag"):
        raise ValueError("suppressed must be 'drop' or 'flag'")
    if suppressed == "flag" and SUPPRESSED_COLUMN in df.columns:
        raise ValueError(f"column {SUPPRESSED_COLUMN!r} already exists")
    out = df.copy()
    for qi in qis:
        out[qi] = hierarchies[qi].generalize(df[qi], levels[qi])
    encoded = [_column_codes(out[qi]) for qi in qis]
    class_ids, n_classes = _group_ids([c for c, _ in encoded], [n for _, n in encoded])
    sizes = np.bincount(class_ids, minlength=n_classes)
    small = sizes[class_ids] < k
    n_small = int(small.sum())
    limit = _max_outliers(len(df), max_suppression)
    if n_small > limit:
        raise ValueError(
            f"{n_small} records are in classes below k={k}, more than the {limit} "
            f"allowed by max_suppression={max_suppression}"
        )
    if suppressed == "drop":
        return out.loc[~small]
    for qi in qis:
        root = hierarchies[qi].top_label or TOP
        out[qi] = out[qi].astype(object).where(~small, root)
    out[SUPPRESSED_COLUMN] = small
    return out
