"""Great Expectations suites: scaffolded from contracts once, then kept in `expectations/` as reviewed files.

Privacy thresholds are ordinary expectations over the exact per-record risk features that
`pipelines.privacy.disclosure` derives in SQL (equivalence-class size, record risk, distinct sensitive values per
class). Their numbers are not in the suite files: each names a Great Expectations suite parameter
(`{"$PARAMETER": "k_anonymity"}`) that the gate fills from the contract (or, for a mart, its approval) at run
time, so the contract is the one place a threshold is written and a reviewer still reads every check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pipelines.contracts import Column, Contract
from pipelines.privacy.disclosure import CLASS_SIZE, DISTINCT_PREFIX, RECORD_RISK

__all__ = ["CLASS_SIZE", "DISTINCT_PREFIX", "RECORD_RISK"]  # re-exported: the suites' column names


def parameter(expression: str) -> dict[str, str]:
    """A threshold Great Expectations fills at validation time from the parameters the gate passes."""
    return {"$PARAMETER": expression}


def privacy_parameters(contract: Contract) -> dict[str, Any]:
    """The values of a department privacy suite's parameters: its contract's thresholds."""
    return contract.privacy.suite_parameters()


def mart_parameters(approval: Any) -> dict[str, Any]:
    """The values of a mart privacy suite's parameters: its approval's minimum group size."""
    return {"min_group_size": approval.min_group_size}


# Patterns of direct identifiers that must never survive de-identification (anchored loosely on
# purpose: a match anywhere in a cell fails).
PII_PATTERNS = {
    "EMAIL_ADDRESS": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "US_SSN": r"\b\d{3}-\d{2}-\d{4}\b",
    "CREDIT_CARD": r"\b(?:\d[ -]?){13,16}\b",
    "PHONE_NUMBER": r"\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b",
    "IBAN_CODE": r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b",
    "IP_ADDRESS": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
}


def _expectation(kind: str, meta: str | None = None, **kwargs: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"type": kind, "kwargs": kwargs}
    if meta:
        item["meta"] = {"notes": meta}
    return item


def null_limit(contract: Contract, column: Column) -> float:
    """The share of empty values a column may have: 0 if not nullable, else its own limit or the contract-wide one."""
    if not column.nullable:
        return 0.0
    return contract.quality.max_null_fraction if column.max_null_fraction is None else column.max_null_fraction


def quality_suite(contract: Contract) -> dict[str, Any]:
    """Schema, nulls, uniqueness, value sets, ranges and row-count bounds, from the contract."""
    q = contract.quality
    items = [
        _expectation(
            "expect_table_columns_to_match_set",
            "schema",
            column_set=[c.name for c in contract.columns],
            exact_match=True,
        ),
        _expectation(
            "expect_table_row_count_to_be_between", "row-count bounds", min_value=q.min_rows, max_value=q.max_rows
        ),
    ]
    for c in contract.columns:
        limit = null_limit(contract, c)
        if limit == 0:
            items.append(
                _expectation("expect_column_values_to_not_be_null", "null rate" if c.nullable else None, column=c.name)
            )
        else:
            items.append(
                _expectation(
                    "expect_column_values_to_not_be_null", "null rate", column=c.name, mostly=round(1 - limit, 6)
                )
            )
        if c.unique:
            items.append(_expectation("expect_column_values_to_be_unique", None, column=c.name))
        if c.allowed_values is not None:
            items.append(
                _expectation("expect_column_values_to_be_in_set", None, column=c.name, value_set=c.allowed_values)
            )
        if c.min_value is not None or c.max_value is not None:
            items.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    None,
                    column=c.name,
                    min_value=c.min_value,
                    max_value=c.max_value,
                )
            )
    return {
        "name": f"{contract.dataset}.quality",
        "meta": {"dataset": contract.dataset, "layer": "raw"},
        "expectations": items,
    }


def privacy_suite(contract: Contract) -> dict[str, Any]:
    """No PII patterns in published text; k, l and uniqueness thresholds over the published quasi-identifiers."""
    published = contract.published_columns
    items: list[dict[str, Any]] = []
    for c in published:
        if c.type != "string" or c.deidentify.operator in {"pseudonymize", "generalize", "redact", "replace", "mask"}:
            continue
        items.append(
            _expectation(
                "expect_column_values_to_not_match_regex_list",
                "no direct identifier pattern survives",
                column=c.name,
                regex_list=list(PII_PATTERNS.values()),
            )
        )
    quasi = contract.published_quasi_identifiers
    if quasi:
        items += [
            _expectation(
                "expect_column_min_to_be_between",
                f"k-anonymity over {quasi}",
                column=CLASS_SIZE,
                min_value=parameter("k_anonymity"),
            ),
            _expectation(
                "expect_column_values_to_be_between",
                "sample uniqueness: share of records in classes of size 1",
                column=CLASS_SIZE,
                min_value=2,
                mostly=parameter("1 - max_sample_uniqueness"),
            ),
            _expectation(
                "expect_column_max_to_be_between",
                "highest prosecutor risk",
                column=RECORD_RISK,
                max_value=parameter("max_prosecutor_risk"),
            ),
        ]
        for name in contract.published_sensitive_attributes:
            items.append(
                _expectation(
                    "expect_column_min_to_be_between",
                    f"distinct l-diversity of {name}",
                    column=DISTINCT_PREFIX + name,
                    min_value=parameter("l_diversity"),
                )
            )
    return {
        "name": f"{contract.dataset}.privacy",
        "meta": {
            "dataset": contract.dataset,
            "layer": "deidentified",
            "quasi_identifiers": quasi,
            "sensitive_attributes": contract.published_sensitive_attributes,
        },
        "expectations": items,
    }


def suite_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def with_reviewed_notes(suite: dict[str, Any], reviewed: dict[str, Any]) -> dict[str, Any]:
    """A regenerated suite that keeps the reviewed one's notes: its suite-level meta keys and each expectation's meta."""
    index, _ = _index(reviewed)
    expectations = []
    for e in suite["expectations"]:
        old = index.get(_key(e), {}).get("meta")
        expectations.append({**e, "meta": old} if old else e)
    # generated keys (dataset, quasi-identifiers) follow the contract; anything a reviewer added stays
    meta = {**reviewed.get("meta", {}), **suite["meta"]}
    return {**suite, "meta": meta, "expectations": expectations}


def write_suite(directory: Path, suite: dict[str, Any], *, overwrite: bool = False) -> Path | None:
    """Write a scaffolded suite unless a reviewed one exists; overwriting keeps its reviewers' notes. None: unchanged."""
    path = suite_path(directory, suite["name"])
    if path.exists():
        if not overwrite:
            return None
        reviewed = json.loads(path.read_text(encoding="utf-8"))
        suite = with_reviewed_notes(suite, reviewed)
        if suite == reviewed:
            return None
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
    return path


def load_suite(directory: Path, name: str) -> dict[str, Any]:
    path = suite_path(directory, name)
    if not path.exists():
        raise FileNotFoundError(
            f"expectation suite {path.name} is missing; scaffold it with: python -m pipelines.quality.scaffold"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def mart_privacy_suite(mart: str, approval: Any, columns: dict[str, str]) -> dict[str, Any]:
    """A mart publishes exactly its approved columns, in groups of at least the approved size, with no PII patterns."""
    items = [
        _expectation(
            "expect_table_columns_to_match_set",
            "only the approved columns (plus the derived risk features)",
            column_set=[*approval.publishes, CLASS_SIZE, RECORD_RISK],
            exact_match=True,
        ),
        _expectation(
            "expect_column_min_to_be_between",
            "minimum group size (distinct people)",
            column=approval.group_size_column,
            min_value=parameter("min_group_size"),
        ),
        _expectation(
            "expect_column_min_to_be_between",
            f"k over published quasi-identifiers {approval.quasi_identifiers}",
            column=CLASS_SIZE,
            min_value=parameter("min_group_size"),
        ),
    ]
    for name, data_type in columns.items():
        if data_type.lower().startswith(("varchar", "text", "string")):
            items.append(
                _expectation(
                    "expect_column_values_to_not_match_regex_list",
                    "no direct identifier pattern",
                    column=name,
                    regex_list=list(PII_PATTERNS.values()),
                )
            )
    return {"name": f"{mart}.privacy", "meta": {"mart": mart, "layer": "mart"}, "expectations": items}


# --- drift: a reviewed suite against what its contract (or approval) declares -----------------------

Key = tuple[str, "str | None"]
_SCHEMA = "expect_table_columns_to_match_set"
_NOT_NULL = "expect_column_values_to_not_be_null"
_MIN = "expect_column_min_to_be_between"


def _key(expectation: dict[str, Any]) -> Key:
    return expectation.get("type", "?"), expectation.get("kwargs", {}).get("column")


def _label(key: Key) -> str:
    kind, column = key
    return f"{kind}({column})" if column else kind


def _index(suite: dict[str, Any]) -> tuple[dict[Key, dict[str, Any]], list[Key]]:
    """A suite's expectations by (type, column), and the keys listed more than once."""
    index: dict[Key, dict[str, Any]] = {}
    twice = []
    for e in suite.get("expectations", []):
        key = _key(e)
        if key in index:
            twice.append(key)
        index[key] = e
    return index, twice


def _contract_field(contract: Contract, key: Key, kwarg: str | None) -> str:
    """The contract field a suite threshold comes from, so a drift message says where to look."""
    kind, column = key
    if kind == _SCHEMA:
        return "columns"
    if kind == "expect_table_row_count_to_be_between":
        return {"min_value": "quality.min_rows", "max_value": "quality.max_rows"}.get(
            kwarg, "quality.min_rows/max_rows"
        )
    if column == CLASS_SIZE:
        return "privacy.k_anonymity" if kind == _MIN else "privacy.max_sample_uniqueness"
    if column == RECORD_RISK:
        return "privacy.max_prosecutor_risk"
    if column is None:
        return "(none)"
    if column.startswith(DISTINCT_PREFIX):
        return "privacy.l_diversity"
    where = f"columns.{column}"
    c = next((c for c in contract.columns if c.name == column), None)
    if kind == _NOT_NULL:
        if c is None or not c.nullable:
            return f"{where}.nullable"
        name = "quality.max_null_fraction" if c.max_null_fraction is None else f"{where}.max_null_fraction"
        return f"{name} = {null_limit(contract, c)}"
    return {
        "expect_column_values_to_be_unique": f"{where}.unique",
        "expect_column_values_to_be_in_set": f"{where}.allowed_values",
        "expect_column_values_to_be_between": f"{where}.{kwarg if kwarg in ('min_value', 'max_value') else 'min_value/max_value'}",
        "expect_column_values_to_not_match_regex_list": f"{where} (a published text column)",
    }.get(kind, where)


def _mart_field(key: Key, kwarg: str | None) -> str:
    """The approval field a mart suite threshold comes from."""
    kind, column = key
    if kind == _SCHEMA:
        return "approval.publishes"
    if kind == _MIN:
        return "approval.min_group_size"
    return f"the mart's text column {column}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list_change(expected: list[Any], actual: list[Any]) -> str | None:
    """How a list in the suite differs from the contract's, as a set (order means nothing to GE here)."""
    added = sorted(set(map(str, actual)) - set(map(str, expected)))
    lacking = sorted(set(map(str, expected)) - set(map(str, actual)))
    parts = ([f"the suite adds {added}"] if added else []) + ([f"lacks {lacking}"] if lacking else [])
    return ", ".join(parts) or None


def is_parameter(value: Any) -> bool:
    """Whether a suite value is a `{"$PARAMETER": ...}` filled at run time."""
    return isinstance(value, dict) and set(value) == {"$PARAMETER"}


def _value_drift(kwarg: str, expected: Any, actual: Any) -> str | None:
    """How one threshold differs between contract and suite, or None if they agree."""
    if is_parameter(expected) and actual != expected:
        # a number written into the suite would shadow the contract's; only the parameter keeps one source
        return f"{kwarg} is {json.dumps(actual)} in the suite but must be {json.dumps(expected)}, filled from the contract at run time"
    if kwarg == "regex_list":
        # a reviewer may add patterns, never drop one the pipeline relies on
        missing = len(set(map(str, expected)) - set(map(str, actual if isinstance(actual, list) else [])))
        return f"regex_list lacks {missing} of the pipeline's PII patterns" if missing else None
    if isinstance(expected, list) and isinstance(actual, list):
        change = _list_change(expected, actual)
        return f"{kwarg} differs: {change}" if change else None
    if _is_number(expected) and _is_number(actual):
        same = math.isclose(float(expected), float(actual), rel_tol=0, abs_tol=1e-9)
    else:
        same = expected == actual
    return None if same else f"{kwarg} is {actual!r} in the suite but {expected!r} in the contract"


def _kwargs_drift(key: Key, expected: dict[str, Any], actual: dict[str, Any], field: Any) -> list[str]:
    """Every threshold of one expectation that is in only one of contract and suite, or differs."""
    e_kwargs, a_kwargs = expected.get("kwargs", {}), actual.get("kwargs", {})
    out = []
    for kwarg in sorted((set(e_kwargs) | set(a_kwargs)) - {"column"}):
        e, a = e_kwargs.get(kwarg), a_kwargs.get(kwarg)
        where = field(key, kwarg)
        if e is None and a is None:
            continue
        if a is None:
            out.append(f"{_label(key)}: {kwarg}={e!r} from the contract ({where}) is not in the suite")
        elif e is None:
            out.append(f"{_label(key)}: {kwarg}={a!r} is in the suite but not in the contract ({where} declares none)")
        elif problem := _value_drift(kwarg, e, a):
            out.append(f"{_label(key)}: {problem} ({where})")
    return out


def _coverage_drift(expected: dict[Key, Any], actual: dict[Key, Any], columns: list[str], field: Any) -> list[str]:
    """Expectations the contract declares that the suite lacks; a column with none at all is named once."""
    covered = {column for _, column in actual}
    out, uncovered = [], {}
    for key in expected:
        if key in actual:
            continue
        if key[1] in columns and key[1] not in covered:
            uncovered.setdefault(key[1], []).append(key[0])
        else:
            out.append(f"{_label(key)} is missing from the suite; the contract declares it ({field(key, None)})")
    for column, kinds in uncovered.items():
        out.append(f"column '{column}' of the contract is not covered: the suite has none of {kinds}")
    return out


def _extra_drift(expected: dict[Key, Any], actual: dict[Key, Any], known: set[str], absent: str) -> list[str]:
    """Expectations only the suite has: on a column the contract lacks, or a threshold it does not declare."""
    out = []
    for key in actual:
        if key in expected:
            continue
        if key[1] is not None and key[1] not in known:
            out.append(f"{_label(key)} is for column '{key[1]}', which {absent}")
        else:
            out.append(f"{_label(key)} is in the suite but the contract declares no such threshold")
    return out


def _drift(
    expected: dict[str, Any],
    suite: dict[str, Any],
    columns: list[str],
    known: set[str],
    absent: str,
    field: Any,
    meta_keys: tuple[str, ...],
) -> list[str]:
    """Every disagreement between a suite built from the declarations and a reviewed one, prefixed by the suite's name."""
    want, _ = _index(expected)
    have, twice = _index(suite)
    out = (
        [f"name is {suite.get('name')!r}, expected {expected['name']!r}"]
        if suite.get("name") != expected["name"]
        else []
    )
    for k in meta_keys:
        if (problem := _value_drift(f"meta.{k}", expected["meta"].get(k), suite.get("meta", {}).get(k))) is not None:
            out.append(problem)
    out += [f"{_label(key)} is listed more than once" for key in dict.fromkeys(twice)]
    out += _coverage_drift(want, have, columns, field)
    out += _extra_drift(want, have, known, absent)
    out += [m for key in want if key in have for m in _kwargs_drift(key, want[key], have[key], field)]
    return [f"{expected['name']}: {m}" for m in out]


def suite_drift(contract: Contract, suite: dict[str, Any]) -> list[str]:
    """Every disagreement between a reviewed quality or privacy suite and its contract (empty: they agree)."""
    field = lambda key, kwarg: _contract_field(contract, key, kwarg)  # noqa: E731
    if str(suite.get("name", "")).endswith(".privacy") or suite.get("meta", {}).get("layer") == "deidentified":
        expected = privacy_suite(contract)
        published = {c.name for c in contract.published_columns}
        known = published | {CLASS_SIZE, RECORD_RISK} | {DISTINCT_PREFIX + c for c in published}
        return _drift(
            expected,
            suite,
            sorted(published),
            known,
            "the contract does not publish",
            field,
            ("dataset", "quasi_identifiers", "sensitive_attributes"),
        )
    names = [c.name for c in contract.columns]
    return _drift(quality_suite(contract), suite, names, set(names), "the contract does not have", field, ("dataset",))


def mart_suite_drift(mart: str, approval: Any, columns: dict[str, str], suite: dict[str, Any]) -> list[str]:
    """Every disagreement between a reviewed mart privacy suite and the mart's approval and declared columns."""
    expected = mart_privacy_suite(mart, approval, columns)
    known = {*columns, *approval.publishes, CLASS_SIZE, RECORD_RISK}
    drift = _drift(expected, suite, sorted(columns), known, "the mart does not declare", _mart_field, ("mart",))
    return [m.replace("the contract", "the approval") for m in drift]
