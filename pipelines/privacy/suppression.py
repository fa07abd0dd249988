"""k-anonymity by suppression: which quasi-identifiers to blank out and which records to withhold, decided once for
every engine (DuckDB's stream here, Spark in pipelines.engines.spark), which only count and filter in their SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from pipelines.contracts import Contract
from pipelines.privacy.disclosure import SQL, k_anonymous_query, records_below_k, table
from pipelines.sql import quote_ident, read_frame

MISSING = "<missing>"  # nulls are a value of their own in equivalence classes
ROW_COLUMN = "__deidentify_row"  # keeps the input order through the k-anonymity window


class PrivacyThresholdError(ValueError):
    """De-identified output would break a privacy threshold that suppression cannot fix within its limit."""


def k_threshold_error(contract: Contract, small: int, rows: int, quasi: list[str]) -> PrivacyThresholdError:
    """The refusal when suppressing the records of classes smaller than k would exceed the contract's limit (counts
    and column names only)."""
    k, limit = contract.privacy.k_anonymity, contract.privacy.max_suppression
    return PrivacyThresholdError(
        f"{contract.dataset}: {small} of {rows} records ({small / rows:.1%}) are in equivalence classes "
        f"smaller than k={k} over {quasi}; suppressing them exceeds the contract's limit of {limit:.1%}"
        + (" even with quasi-identifiers blanked out" if contract.privacy.adaptive_suppression else "")
        + ". Generalize a quasi-identifier further (coarser bands, shorter postcode) or suppress a column."
    )


def search_blanking(frame: pd.DataFrame, quasi: list[str], k: int, limit: float) -> dict[str, int] | None:
    """Lowest-loss choice of quasi-identifiers to blank out ('*') so that k holds within the limit (ARX's
    lattice search with its entropy loss, over two levels per column: as generalized, or suppressed)."""
    from pipelines.privacy.hierarchies import hierarchy_from_mapping
    from pipelines.privacy.risk import NoGeneralizationError, find_minimal_generalization

    data = frame[quasi].astype("string").fillna(MISSING)
    hierarchies = {q: hierarchy_from_mapping(q, [{v: "*" for v in pd.unique(data[q])}]) for q in quasi}
    try:
        return dict(find_minimal_generalization(data, quasi, hierarchies, k, limit).levels)
    except NoGeneralizationError:
        return None


@dataclass
class Suppression:
    """What k-anonymity withholds: the quasi-identifiers blanked out and the records left in classes smaller than k."""

    quasi: list[str]
    k: int
    applies: bool  # False: nothing to enforce (no quasi-identifier, k <= 1 or no rows), every record is published
    blanked: list[str] = field(default_factory=list)
    suppressed: int = 0
    params: dict[str, Any] = field(default_factory=dict)


def plan_suppression(
    contract: Contract,
    rows: int,
    count_small: Callable[[list[str]], int],
    quasi_values: Callable[[], pd.DataFrame],
) -> Suppression:
    """Suppress records in equivalence classes smaller than k, within the contract's suppression limit.

    If the contract's generalization alone would need more suppression than allowed, whole quasi-identifiers are
    blanked out, choosing the set that loses least information (adaptive); if none suffices, the run is refused.
    `count_small(blanked)`: records in classes smaller than k with those columns blanked; `quasi_values()`: the
    quasi-identifier columns of every record in input order (read only if a blanking has to be searched).
    """
    quasi = contract.published_quasi_identifiers
    k, limit = contract.privacy.k_anonymity, contract.privacy.max_suppression
    params: dict[str, Any] = {"quasi_identifiers": quasi, "k": k, "max_suppression": limit, "blanked": []}
    if not quasi or k <= 1 or rows == 0:
        return Suppression(quasi, k, applies=False, params=params)
    small = count_small([])
    blanked: list[str] = []
    if small / rows > limit:
        levels = search_blanking(quasi_values(), quasi, k, limit) if contract.privacy.adaptive_suppression else None
        if levels is None:
            raise k_threshold_error(contract, small, rows, quasi)
        blanked = [q for q, level in levels.items() if level > 0]
        params["blanked"] = blanked
        small = count_small(blanked)
    params["suppressed_share"] = round(small / rows, 6)
    return Suppression(quasi, k, applies=True, blanked=blanked, suppressed=small, params=params)


def publish_k_anonymous(con, staging: str, target: str, contract: Contract, rows: int) -> Suppression:
    """Replace the table `target` with the k-anonymous rows of the table (or view) `staging`, in input order
    (`ROW_COLUMN`, dropped), in DuckDB's SQL (class sizes as `disclosure` counts them)."""
    quasi = contract.published_quasi_identifiers
    row = quote_ident(ROW_COLUMN)

    def blanked_out(blanked: list[str]) -> SQL:
        replace = ", ".join(f"CAST('*' AS VARCHAR) AS {quote_ident(q)}" for q in blanked)
        return SQL(f"(SELECT * REPLACE ({replace}) FROM {table(staging)})") if blanked else table(staging)

    plan = plan_suppression(
        contract,
        rows,
        lambda blanked: records_below_k(con, blanked_out(blanked), quasi, contract.privacy.k_anonymity),
        lambda: read_frame(
            con, f"SELECT {', '.join(quote_ident(q) for q in quasi)} FROM {table(staging)} ORDER BY {row}"
        ),
    )
    published = (
        k_anonymous_query(blanked_out(plan.blanked), quasi, plan.k, exclude=[ROW_COLUMN], order_by=ROW_COLUMN)
        if plan.applies
        else f"SELECT * EXCLUDE ({row}) FROM {table(staging)} ORDER BY {row}"
    )
    con.execute(f"CREATE OR REPLACE TABLE {quote_ident(target)} AS {published}")
    return plan


def enforce_k_anonymity(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, int, dict[str, Any]]:
    """`publish_k_anonymous` on an in-memory frame of published columns (through an in-memory DuckDB): the rows that
    may be published (a fresh index), how many were suppressed and the parameters."""
    con = duckdb.connect()
    try:
        con.register("published", frame.reset_index(drop=True).assign(**{ROW_COLUMN: range(len(frame))}))
        plan = publish_k_anonymous(con, "published", "k_anonymous", contract, len(frame))
        return read_frame(con, "SELECT * FROM k_anonymous"), plan.suppressed, plan.params
    finally:
        con.close()
