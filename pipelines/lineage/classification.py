"""PII classification as column tags, and the rules that carry it from a column to the columns made from it.

Every column of every asset carries `pii/role`, `pii/state` and, when it holds personal data, `pii/entity`,
`pii/operator` and `pii/key_id`. A raw column is `identifying` when its role is personal. De-identification
changes the state by its operator (pseudonymized, generalized, masked, redacted, scanned, suppressed); a derived
column inherits the most exposed state of its inputs, except through an anonymizing aggregate (COUNT, SUM, AVG,
...), which makes it `aggregated`, and a DP release, which makes it `dp_noised`. MIN, MAX and the like return one
person's value and do not anonymize. A published column still `identifying`/`unmasked` with a direct-identifier
or join-key role fails the mart's gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipelines.contracts import Column, Contract, Role

ROLE, ENTITY, OPERATOR, STATE, KEY_ID, FROM = (
    "pii/role",
    "pii/entity",
    "pii/operator",
    "pii/state",
    "pii/key_id",
    "pii/from",
)

# how exposed a value in this state is: a derived column takes its most exposed input's state
EXPOSURE = {
    "identifying": 9,
    "unmasked": 8,
    "encrypted": 7,
    "pseudonymized": 6,
    "masked": 5,
    "scanned": 4,
    "redacted": 3,
    "generalized": 2,
    "dp_noised": 1,
    "aggregated": 1,
    "not_personal": 0,
    "suppressed": 0,
}
STATE_BY_OPERATOR = {
    "pseudonymize": "pseudonymized",
    "generalize": "generalized",
    "mask": "masked",
    "redact": "redacted",
    "replace": "redacted",
    "scan": "scanned",
    "suppress": "suppressed",
    "encrypt": "encrypted",
}
ANONYMIZING_AGGREGATES = {
    "count",
    "sum",
    "avg",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "variance",
    "var_samp",
    "var_pop",
    "median",
    "quantile",
    "approx_count_distinct",
}
PERSONAL = {Role.direct_identifier, Role.quasi_identifier, Role.join_key, Role.free_text, Role.sensitive_attribute}
IDENTIFIER_ROLES = {Role.direct_identifier.value, Role.join_key.value}
EXPLAIN = {
    "identifying": "raw personal data",
    "unmasked": "kept as is",
    "encrypted": "reversibly encrypted (break-glass key)",
    "pseudonymized": "keyed pseudonym",
    "masked": "partly masked",
    "redacted": "replaced by its type",
    "scanned": "free text, PII inside masked",
    "generalized": "generalized",
    "aggregated": "aggregated (no person-level value)",
    "dp_noised": "differentially private release",
    "not_personal": "not personal",
    "suppressed": "never left the raw database",
}


def raw_tags(column: Column) -> dict[str, str]:
    """A landed or raw column: as the department sent it."""
    tags = {ROLE: column.role.value, STATE: "identifying" if column.role in PERSONAL else "not_personal"}
    if column.entity:
        tags[ENTITY] = column.entity
    return tags


def deidentified_tags(column: Column, key_id: str | None) -> dict[str, str]:
    """A column after its contract's operator ran (keep on a personal column leaves it unmasked)."""
    operator = column.deidentify.operator
    tags = raw_tags(column)
    tags[OPERATOR] = operator
    if operator == "keep":
        tags[STATE] = "unmasked" if column.role in PERSONAL else "not_personal"
    else:
        tags[STATE] = STATE_BY_OPERATOR.get(operator, "unmasked")
    if operator in {"pseudonymize", "encrypt"} or (
        operator == "scan" and "pseudonymize" in (getattr(column.deidentify, "operators", {}) or {}).values()
    ):
        if key_id:
            tags[KEY_ID] = key_id
    return tags


def contract_tags(
    contract: Contract, key_id: str | None = None, stage: str = "deidentified"
) -> dict[str, dict[str, str]]:
    """column -> tags for every column of a dataset at one stage (landed/raw or deidentified)."""
    return {
        c.name: (raw_tags(c) if stage in {"landed", "raw"} else deidentified_tags(c, key_id)) for c in contract.columns
    }


def propagate(inputs: Iterable[Mapping[str, str]], transform: str, sources: Iterable[str] = ()) -> dict[str, str]:
    """The tags of a column made from `inputs` by `transform` (identity, expression, aggregate, min_max, dp)."""
    inputs = [dict(i) for i in inputs if i]
    source_list = sorted(set(sources))
    if transform in {"aggregate", "dp"}:
        entities = sorted({i[ENTITY] for i in inputs if i.get(ENTITY)})
        tags = {ROLE: "aggregate", STATE: "aggregated" if transform == "aggregate" else "dp_noised"}
        if entities:
            tags[ENTITY] = ",".join(entities)  # what it was computed from, kept visible for the steward
    elif not inputs:
        tags = {ROLE: "plain_attribute", STATE: "not_personal"}
    else:
        tags = dict(
            max(inputs, key=lambda i: EXPOSURE.get(i.get(STATE, "not_personal"), 0))
        )  # identity, expression, min/max
        tags.pop(FROM, None)
    if source_list:
        tags[FROM] = ",".join(source_list)
    return tags


def unmasked_identifier(tags: Mapping[str, str]) -> bool:
    """Whether a column still carries a direct identifier (or a join key) as the department sent it."""
    return tags.get(ROLE) in IDENTIFIER_ROLES and tags.get(STATE) in {"identifying", "unmasked"}


def describe(tags: Mapping[str, str]) -> str:
    """One line for a column's description: what it is and what was done to it."""
    parts = [tags.get(ROLE, "plain_attribute").replace("_", " ")]
    if tags.get(ENTITY):
        parts.append(tags[ENTITY])
    parts.append(EXPLAIN.get(tags.get(STATE, ""), tags.get(STATE, "")))
    if tags.get(OPERATOR):
        parts.append(f"operator {tags[OPERATOR]}")
    if tags.get(KEY_ID):
        parts.append(f"key {tags[KEY_ID]}")
    return "PII: " + "; ".join(p for p in parts if p)
