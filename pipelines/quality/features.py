"""Exact per-record risk features that privacy suites put thresholds on."""

from __future__ import annotations

import pandas as pd

from pipelines.quality.suites import CLASS_SIZE, DISTINCT_PREFIX, RECORD_RISK


def with_risk_features(frame: pd.DataFrame, quasi_identifiers: list[str], sensitive: list[str]) -> pd.DataFrame:
    """Add equivalence-class size, prosecutor risk (1/size) and distinct sensitive values per class."""
    out = frame.copy()
    if not quasi_identifiers or frame.empty:
        return out
    groups = out.groupby(quasi_identifiers, dropna=False, sort=False, observed=True)
    out[CLASS_SIZE] = groups[quasi_identifiers[0]].transform("size").astype("int64")
    out[RECORD_RISK] = 1.0 / out[CLASS_SIZE]
    for column in sensitive:
        out[DISTINCT_PREFIX + column] = groups[column].transform(lambda s: s.nunique(dropna=False)).astype("int64")
    return out


def with_group_risk_features(frame: pd.DataFrame, quasi_identifiers: list[str], weight_column: str) -> pd.DataFrame:
    """For aggregated rows: people per equivalence class (summing group sizes) and their prosecutor risk."""
    out = frame.copy()
    if frame.empty:
        return out
    if quasi_identifiers:
        out[CLASS_SIZE] = (
            out.groupby(quasi_identifiers, dropna=False, sort=False)[weight_column].transform("sum").astype("int64")
        )
    else:
        out[CLASS_SIZE] = int(out[weight_column].sum())
    out[RECORD_RISK] = 1.0 / out[CLASS_SIZE]
    return out
