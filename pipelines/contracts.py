"""Data contracts: one YAML file per departmental dataset, validated on load.

A contract is the single place where a column's meaning (its role) and its de-identification are
decided. Everything downstream (assets, checks, suites, metadata) is derived from it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pipelines.paths import CONTRACTS_DIR  # noqa: F401 (re-exported)

_IDENT = r"^[a-z][a-z0-9_]*$"


class ContractError(ValueError):
    """A contract file is missing, malformed or inconsistent; the message names file and field."""


class Role(str, Enum):
    direct_identifier = "direct_identifier"
    quasi_identifier = "quasi_identifier"
    sensitive_attribute = "sensitive_attribute"
    free_text = "free_text"
    join_key = "join_key"
    plain_attribute = "plain_attribute"


PERSONAL_ROLES = {Role.direct_identifier, Role.quasi_identifier, Role.join_key, Role.free_text}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- de-identification operators, one model each so a typo in a parameter is named on load ---------


class Keep(_Strict):
    operator: Literal["keep"]


class Suppress(_Strict):
    """Drop the column: it is never written to the de-identified table."""

    operator: Literal["suppress"]


class Redact(_Strict):
    """Replace every value with NULL (the column stays, its content does not)."""

    operator: Literal["redact"]


class Replace(_Strict):
    """Replace every value with a constant, by default the entity type, e.g. `<US_SSN>`."""

    operator: Literal["replace"]
    new_value: str | None = None


class Mask(_Strict):
    """Presidio's character masking; `keep_last` masks all but the last N characters of each value."""

    operator: Literal["mask"]
    masking_char: str = Field(default="*", min_length=1, max_length=1)
    chars_to_mask: int | None = Field(default=None, gt=0)
    keep_last: int | None = Field(default=None, ge=0)
    from_end: bool = False

    @model_validator(mode="after")
    def _one_length(self) -> Mask:
        if (self.chars_to_mask is None) == (self.keep_last is None):
            raise ValueError("mask needs exactly one of chars_to_mask or keep_last")
        return self


class Pseudonymize(_Strict):
    """Keyed pseudonym (HMAC-SHA256): the same value in the same domain gives the same token everywhere."""

    operator: Literal["pseudonymize"]
    domain: str | None = None  # defaults to the column's entity; shared domains make joins possible


class Encrypt(_Strict):
    """Reversible encryption for break-glass re-identification; off unless enabled in settings."""

    operator: Literal["encrypt"]


class Generalize(_Strict):
    operator: Literal["generalize"]
    method: Literal["age_band", "date_month", "date_year", "truncate", "numeric_bucket", "hierarchy"]
    width: int | None = Field(default=None, gt=0)  # age_band, numeric_bucket
    keep: int | None = Field(default=None, ge=0)  # truncate: characters kept
    reference_date: date | None = None  # age_band: age at this date (default: the run's date)
    hierarchy: str | None = None  # hierarchy: ARX-format file, relative to contracts/hierarchies/
    level: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _required_parameters(self) -> Generalize:
        needed = {
            "age_band": ["width"],
            "numeric_bucket": ["width"],
            "truncate": ["keep"],
            "hierarchy": ["hierarchy", "level"],
        }.get(self.method, [])
        missing = [p for p in needed if getattr(self, p) is None]
        if missing:
            raise ValueError(f"generalize method '{self.method}' needs {', '.join(missing)}")
        return self


class ScanText(_Strict):
    """Free text: find PII with Presidio and apply an operator per entity type."""

    operator: Literal["scan"]
    entities: list[str] | None = None  # None: every entity the detector supports
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    # entity type -> operator name (pseudonymize | replace | redact | mask); "DEFAULT" for the rest
    operators: dict[str, Literal["pseudonymize", "replace", "redact", "mask"]] = Field(
        default_factory=lambda: {"DEFAULT": "replace"}
    )
    # kept columns of the same table whose values name things, not people (product names): the texts' mentions
    # of them are no name candidates for NER, and a NER entity inside one is not masked
    non_personal_terms_from: list[str] = Field(default_factory=list)
    # short categorical text (offence descriptions, product names): identifiers are masked, but what NER or a
    # capitalised run infers (a person, a place) only when it is a full name that is not the column's own words
    label_text: bool = False
    # label text only, a steward's call: the column's values held by at least k records are its non-personal vocabulary
    vocabulary_from_values: bool = False

    @model_validator(mode="after")
    def _vocabulary_needs_labels(self) -> ScanText:
        if self.vocabulary_from_values and not self.label_text:
            raise ValueError("vocabulary_from_values is for label text: set label_text: true as well")
        return self


Deidentification = Annotated[
    Keep | Suppress | Redact | Replace | Mask | Pseudonymize | Encrypt | Generalize | ScanText,
    Field(discriminator="operator"),
]

ColumnType = Literal["string", "integer", "decimal", "boolean", "date", "timestamp"]


class Column(_Strict):
    name: str = Field(pattern=_IDENT)
    type: ColumnType
    role: Role
    description: str = ""
    entity: str | None = None  # Presidio entity type of the values, for personal columns
    nullable: bool = True
    unique: bool = False
    allowed_values: list[str] | None = None
    min_value: float | None = None
    max_value: float | None = None
    # share of empty values this column may have, overriding quality.max_null_fraction (nullable: false means 0)
    max_null_fraction: float | None = Field(default=None, ge=0, le=1)
    # entity types a steward confirmed are not personal here (e.g. merchants named after people)
    tolerate_entities: list[str] = Field(default_factory=list)
    deidentify: Deidentification

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        op = self.deidentify.operator
        if self.role == Role.direct_identifier and op == "keep":
            raise ValueError("a direct_identifier cannot be kept as is; choose an operator that masks it")
        if self.role == Role.free_text and op not in {"scan", "suppress", "redact"}:
            raise ValueError("a free_text column must be scanned (operator: scan), suppressed or redacted")
        if op == "scan" and self.role != Role.free_text:
            raise ValueError("operator 'scan' is for columns whose role is free_text")
        if op == "pseudonymize" and not (self.entity or self.deidentify.domain):  # type: ignore[union-attr]
            raise ValueError("pseudonymize needs the column's entity or an explicit domain")
        if self.role in {Role.direct_identifier, Role.join_key} and not self.entity:
            raise ValueError(f"a {self.role.value} column must declare its entity (e.g. EMAIL_ADDRESS)")
        return self


FORMAT_EXTENSIONS = {"csv": ".csv"}
_OCCURRENCE = re.compile(r"^(?P<name>.*)#(?P<n>\d+)$")


def source_ref(ref: str) -> tuple[str, int | None]:
    """Split a source column reference: 'decile_score#2' -> ('decile_score', 2); 'x' -> ('x', None)."""
    m = _OCCURRENCE.match(ref)
    return (m.group("name"), int(m.group("n"))) if m else (ref, None)


def _check_ref(ref: str) -> None:
    name, n = source_ref(ref)
    if not name:
        raise ValueError(f"{ref!r} names no source column")
    if n == 0:
        raise ValueError(f"{ref!r}: occurrences are counted from 1 ('{name}#1' is the first)")


def _glob_problem(segment: str) -> str | None:
    """Why a path segment is not a glob pattern Path.glob reads as meant, or None."""
    if "**" in segment and segment != "**":
        return "'**' must be a whole path segment"
    if "{" in segment or "}" in segment:
        return "brace expansion ({a,b}) is not glob syntax"
    i = 0
    while i < len(segment):
        if segment[i] == "[":
            # a ']' right after '[' or '[!' is a literal member of the set, as in fnmatch
            j = i + 1 + (segment[i + 1 : i + 2] == "!")
            j += segment[j : j + 1] == "]"
            close = segment.find("]", j)
            if close < 0:
                return "unclosed '[' in a character set"
            i = close
        elif segment[i] == "]":
            return "']' without an opening '['"
        i += 1
    return None


def landing_pattern_problem(pattern: str, department: str | None, fmt: str) -> str | None:
    """Why a landing pattern is unsafe or surely wrong (None if fine): relative, inside the department's folder, right extension."""
    if "\\" in pattern:
        return "use '/' as the path separator"
    if pattern.startswith("/") or re.match(r"^[A-Za-z]:", pattern):
        return "must be relative to the landing directory, not absolute"
    segments = pattern.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "must not contain empty, '.' or '..' path segments"
    if len(segments) < 2:
        return "must be '<department>/<file pattern>'"
    if department is not None and segments[0] != department:
        return f"its first folder must be the contract's department '{department}', not {segments[0]!r}"
    problem = next((p for s in segments if (p := _glob_problem(s))), None)
    if problem:
        return problem
    extension = FORMAT_EXTENSIONS[fmt]
    if not segments[-1].endswith(extension) or segments[-1] == "**":
        return f"the file part must end with '{extension}' (format {fmt})"
    return None


class Source(_Strict):
    kind: Literal["file"] = "file"
    path_pattern: str  # glob relative to the landing directory, e.g. "hr/employees_*.csv"
    format: Literal["csv"] = "csv"
    encoding: Literal["utf-8"] = "utf-8"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    max_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_cell_bytes: int = Field(default=65_536, gt=0)
    # take real exports as they are: source header -> contract column; 'name#2' is the 2nd header called 'name'
    rename: dict[str, str] = Field(default_factory=dict)
    # source headers (or 'name#N' occurrences) that are declared but not ingested; a plain name drops every occurrence
    ignore_columns: list[str] = Field(default_factory=list)

    @field_validator("rename")
    @classmethod
    def _rename_refs(cls, rename: dict[str, str]) -> dict[str, str]:
        for ref, target in rename.items():
            _check_ref(ref)
            if not re.match(_IDENT, target):
                raise ValueError(f"{ref!r} maps to {target!r}, which is not a column name")
        by_target: dict[str, list[str]] = {}
        for ref, target in rename.items():
            by_target.setdefault(target, []).append(ref)
        clash = {t: refs for t, refs in by_target.items() if len(refs) > 1}
        if clash:
            t, refs = next(iter(clash.items()))
            raise ValueError(f"{' and '.join(map(repr, refs))} both map to column {t!r}; a column has one source")
        return rename

    @field_validator("ignore_columns")
    @classmethod
    def _ignore_refs(cls, ignored: list[str]) -> list[str]:
        for ref in ignored:
            _check_ref(ref)
        dupes = sorted({r for r in ignored if ignored.count(r) > 1})
        if dupes:
            raise ValueError(f"listed twice: {', '.join(map(repr, dupes))}")
        return ignored

    def conflicts(self) -> list[str]:
        """Source columns both renamed and ignored (plain names cover every occurrence)."""
        ignored = set(self.ignore_columns)
        return [r for r in self.rename if r in ignored or source_ref(r)[0] in ignored]


class PrivacyThresholds(_Strict):
    k_anonymity: int = 5
    l_diversity: int = Field(default=1, ge=1)
    max_sample_uniqueness: float = Field(default=0.05, ge=0, le=1)
    max_prosecutor_risk: float = Field(default=0.2, gt=0, le=1)
    # records in classes smaller than k are suppressed, up to this share; beyond it the run fails
    max_suppression: float = Field(default=0.05, ge=0, le=1)
    # when suppression alone cannot reach k, blank out whole quasi-identifiers (least information lost)
    adaptive_suppression: bool = True
    score_threshold: float = Field(default=0.4, ge=0, le=1)  # Presidio score for detection (its default)

    @field_validator("k_anonymity")
    @classmethod
    def _k_protects(cls, k: int) -> int:
        if k < 2:
            raise ValueError(
                f"k_anonymity must be at least 2 (got {k}): with k = 1 every person may be alone in their group"
            )
        return k

    # The thresholds the privacy suites take at run time: each suite expectation names one of these in a
    # {"$PARAMETER": ...}, so the contract is the only place a number is written.
    SUITE_PARAMETERS: ClassVar[tuple[str, ...]] = (
        "k_anonymity",
        "l_diversity",
        "max_sample_uniqueness",
        "max_prosecutor_risk",
    )

    def suite_parameters(self) -> dict[str, int | float]:
        """The privacy suite's parameter values, by the contract field each one is."""
        return {name: getattr(self, name) for name in self.SUITE_PARAMETERS}


class QualityThresholds(_Strict):
    min_rows: int = Field(default=1, ge=1)
    max_rows: int = Field(default=50_000_000, ge=1)
    max_null_fraction: float = Field(default=0.2, ge=0, le=1)
    max_age_days: int | None = Field(default=None, ge=1)  # freshness of the landed file


class Retention(_Strict):
    """How `retention_days` is measured: from a row's event date, else (no column) from its file's landing time."""

    event_date_column: str | None = Field(default=None, pattern=_IDENT)


class Contract(_Strict):
    dataset: str = Field(pattern=_IDENT)
    department: str = Field(pattern=_IDENT)
    version: int = Field(ge=1)
    title: str
    owner: str
    steward: str
    purpose: str
    retention_days: int = Field(gt=0)
    retention: Retention = Retention()

    @model_validator(mode="after")
    def _retention_column(self) -> Contract:
        name = self.retention.event_date_column
        column = next((c for c in self.columns if c.name == name), None)
        if name is not None and (column is None or column.type not in {"date", "timestamp"}):
            raise ValueError(
                f"retention.event_date_column '{name}' must name a date or timestamp column of this contract"
            )
        return self

    source: Source
    columns: list[Column] = Field(min_length=1)
    quality: QualityThresholds = QualityThresholds()
    privacy: PrivacyThresholds = PrivacyThresholds()
    # filled by the loader, not the author
    path: Path | None = Field(default=None, exclude=True)
    version_hash: str = Field(default="", exclude=True)

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns: list[Column]) -> list[Column]:
        names = [c.name for c in columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names: {', '.join(dupes)}")
        return columns

    @model_validator(mode="after")
    def _dataset_prefix(self) -> Contract:
        if not self.dataset.startswith(self.department + "_"):
            raise ValueError(f"dataset '{self.dataset}' must start with its department '{self.department}_'")
        return self

    @model_validator(mode="after")
    def _term_sources(self) -> Contract:
        by_name = {c.name: c for c in self.columns}
        for column in self.columns:
            for name in getattr(column.deidentify, "non_personal_terms_from", ()):
                source = by_name.get(name)
                where = f"column '{column.name}': non_personal_terms_from"
                if source is None:
                    raise ValueError(f"{where} names '{name}', which is not a column of this contract")
                if source.role != Role.plain_attribute or source.deidentify.operator != "keep":
                    raise ValueError(
                        f"{where} names '{name}': only a kept plain_attribute column can name non-personal terms"
                    )
                if {"PERSON", "LOCATION", "NRP"} & set(source.tolerate_entities):
                    raise ValueError(f"{where} names '{name}', which tolerates names or places (tolerate_entities)")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _source_fits(cls, data: Any, handler: Any) -> Contract:
        contract = handler(data)
        errors = contract._source_errors() + contract._threshold_errors()
        if errors:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_error", "{message}", {"message": m}), loc=loc, input=None
                    )
                    for loc, m in errors
                ],
            )
        return contract

    def _source_errors(self) -> list[tuple[tuple[str, ...], str]]:
        """Checks of `source` that need the department and the columns, each with the field it is about."""
        src, names = self.source, {c.name for c in self.columns}
        errors = []
        problem = landing_pattern_problem(src.path_pattern, self.department, src.format)
        if problem:
            errors.append((("source", "path_pattern"), f"{src.path_pattern!r} {problem}"))
        for ref, target in src.rename.items():
            if target not in names:
                errors.append(
                    (("source", "rename"), f"{ref!r} maps to {target!r}, which is not a column of this contract")
                )
        for ref in src.conflicts():
            errors.append((("source", "ignore_columns"), f"{ref!r} is both renamed and ignored"))
        targets = set(src.rename.values())
        for name in sorted(names - targets):
            if name in src.rename:
                errors.append(
                    (
                        ("source", "rename"),
                        f"column {name!r} has no source: its header is renamed to {src.rename[name]!r}",
                    )
                )
            elif name in src.ignore_columns:
                errors.append(
                    (
                        ("source", "ignore_columns"),
                        f"column {name!r} has no source: its header is ignored and nothing is renamed to it",
                    )
                )
        return errors

    def _threshold_errors(self) -> list[tuple[Any, ...]]:
        """Quality thresholds that contradict each other, each with the field it is about."""
        errors: list[tuple[Any, ...]] = []
        if self.quality.min_rows > self.quality.max_rows:
            errors.append(
                (("quality", "max_rows"), f"max_rows {self.quality.max_rows} is below min_rows {self.quality.min_rows}")
            )
        for i, c in enumerate(self.columns):
            errors += [(("columns", i, field), f"column '{c.name}': {m}") for field, m in _column_threshold_problems(c)]
        return errors

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def columns_with_role(self, *roles: Role) -> list[Column]:
        return [c for c in self.columns if c.role in roles]

    @property
    def published_columns(self) -> list[Column]:
        """Columns that reach the de-identified table (everything not suppressed)."""
        return [c for c in self.columns if c.deidentify.operator != "suppress"]

    @property
    def published_quasi_identifiers(self) -> list[str]:
        """The published quasi-identifiers, in contract order: the columns whose combination forms the equivalence
        classes that k, l and re-identification risk are measured over."""
        return [c.name for c in self.published_columns if c.role == Role.quasi_identifier]

    @property
    def published_sensitive_attributes(self) -> list[str]:
        """The published sensitive attributes, in contract order: what l-diversity is measured on."""
        return [c.name for c in self.published_columns if c.role == Role.sensitive_attribute]


def _number(value: float) -> str:
    """A threshold as the author wrote it: 1000000, not 1e+06 or 1000000.0."""
    return str(int(value)) if value.is_integer() else str(value)


def _column_threshold_problems(c: Column) -> list[tuple[str, str]]:
    """(field, problem) for a column's quality thresholds: ranges, value sets, null limits."""
    problems = []
    if c.max_null_fraction is not None and not c.nullable:
        problems.append(
            (
                "max_null_fraction",
                "nullable: false allows no empty values; drop max_null_fraction or set nullable: true",
            )
        )
    has_range = c.min_value is not None or c.max_value is not None
    if has_range and c.type not in {"integer", "decimal"}:
        problems.append(
            (
                "min_value" if c.min_value is not None else "max_value",
                f"ranges apply to integer or decimal columns, not {c.type}",
            )
        )
    if c.min_value is not None and c.max_value is not None and c.min_value > c.max_value:
        problems.append(("max_value", f"max_value {_number(c.max_value)} is below min_value {_number(c.min_value)}"))
    if c.allowed_values is not None and not c.allowed_values:
        problems.append(("allowed_values", "an empty list allows nothing; drop allowed_values to allow any value"))
    dupes = sorted({v for v in c.allowed_values or () if c.allowed_values.count(v) > 1})  # type: ignore[union-attr]
    if dupes:
        problems.append(("allowed_values", f"listed twice: {', '.join(map(repr, dupes))}"))
    return problems


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"invalid contract {path.name}:"]
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union")))
        lines.append(f"  - field '{loc or '(root)'}': {e['msg']}")
    return "\n".join(lines)


def load_contract(path: Path) -> Contract:
    """Load and validate one contract file."""
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ContractError(f"cannot read contract {path.name}: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise ContractError(f"invalid contract {path.name}: expected a mapping at the top level")
    try:
        contract = Contract.model_validate(data)
    except ValidationError as e:
        raise ContractError(_describe(e, path)) from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return contract.model_copy(update={"path": path, "version_hash": digest})


def load_contracts(directory: Path = CONTRACTS_DIR) -> list[Contract]:
    """Load every `*.yaml` contract in a directory, sorted by dataset name."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ContractError(f"no contracts (*.yaml) found in {directory}")
    contracts = [load_contract(p) for p in paths]
    seen: dict[str, Path] = {}
    for c in contracts:
        if c.dataset in seen:
            raise ContractError(f"dataset '{c.dataset}' is declared twice: {seen[c.dataset].name} and {c.path.name}")
        seen[c.dataset] = c.path  # type: ignore[assignment]
    return contracts
