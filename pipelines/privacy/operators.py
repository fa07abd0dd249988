"""De-identification operators for whole columns, and the keyed-pseudonym operator for Presidio.

Column operators work on the distinct values of a column and broadcast the result back, so a
million rows with ten thousand distinct values cost ten thousand operations.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from presidio_anonymizer.operators import Encrypt as PresidioEncrypt
from presidio_anonymizer.operators import Operator, OperatorType

from pipelines.contracts import Column, Generalize
from pipelines.privacy.keys import SecretKey

PSEUDONYM_HEX_CHARS = 16  # 64 bits: collisions stay negligible below ~100M distinct values per domain

_NON_DIGITS = re.compile(r"\D+")
_SPACES = re.compile(r"\s+")


def _email(value: str) -> str:
    return value.strip().lower()


def _person(value: str) -> str:
    return _SPACES.sub(" ", value.strip()).casefold()


def _digits(value: str) -> str:
    return _NON_DIGITS.sub("", value)


def _phone(value: str) -> str:
    digits = _NON_DIGITS.sub("", value)
    # +1 (415) 555-0100 and (415) 555-0100 are the same US number
    return digits[1:] if len(digits) == 11 and digits[0] == "1" else digits


def _compact_upper(value: str) -> str:
    return value.strip().replace(" ", "").upper()


def _stripped(value: str) -> str:
    return value.strip()


_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "EMAIL_ADDRESS": _email,
    "PERSON": _person,
    "PHONE_NUMBER": _phone,
    "US_SSN": _digits,
    "CREDIT_CARD": _digits,
    "IBAN_CODE": _compact_upper,
    "EMPLOYEE_ID": _compact_upper,
}


def normalizer(domain: str) -> Callable[[str], str]:
    """The function giving a value's canonical form in `domain` (entities sharing one share it)."""
    return _NORMALIZERS.get(domain, _stripped)


def normalize(domain: str, value: str) -> str:
    """Canonical form of a value before hashing, so format variants of one identifier link."""
    return normalizer(domain)(value)


def normalize_series(domain: str, values: pd.Series) -> pd.Series:
    """`normalize` over a column of strings (same values, one call per value without dispatch)."""
    fn = normalizer(domain)
    return pd.Series([fn(v) for v in values.astype(object).astype(str).tolist()], index=values.index, dtype=object)


COLUMN_WISE_HMAC_MIN_VALUES = 20_000  # below this, DuckDB's start-up costs more than the Python loop


def pseudonyms(secret: bytes, domain: str, values: pd.Series) -> list[str]:
    """`pseudonym` of many values (normalized at once; the HMAC key schedule computed once; large
    columns hashed column-wise in DuckDB)."""
    normalized = normalize_series(domain, values).tolist()
    label = domain.lower()
    if len(normalized) >= COLUMN_WISE_HMAC_MIN_VALUES:
        hashed = _hmac_sha256_column_wise(secret, f"{domain}\x1f", normalized)
        if hashed is not None:
            return [f"{label}_{h}" for h in hashed]
    base = hmac.new(secret, digestmod=hashlib.sha256)
    prefix, out = f"{domain}\x1f".encode(), []
    for value in normalized:
        h = base.copy()
        h.update(prefix + value.encode("utf-8"))
        out.append(f"{label}_{h.hexdigest()[:PSEUDONYM_HEX_CHARS]}")
    return out


def _hmac_sha256_column_wise(secret: bytes, prefix: str, values: list[str]) -> list[str] | None:
    """The first PSEUDONYM_HEX_CHARS hex digits of HMAC-SHA256(secret, prefix + value) for every value, computed by
    DuckDB's vectorized sha256 as RFC 2104 defines HMAC: H((K xor opad) || H((K xor ipad) || message)). Equal to
    Python's `hmac` (tested); the key pads are query parameters of a private in-memory database, never stored or
    logged. None if DuckDB fails (the caller then hashes in Python; no error text, which could quote a value)."""
    import duckdb
    import pyarrow as pa

    block = hashlib.sha256(secret).digest() if len(secret) > 64 else secret  # RFC 2104: long keys are hashed first
    block = block.ljust(64, b"\0")
    inner, outer = bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)
    con = duckdb.connect()
    try:
        con.register(
            "hmac_input", pa.table({"i": pa.array(range(len(values)), pa.int64()), "v": pa.array(values, pa.string())})
        )
        rows = con.execute(
            "SELECT left(sha256($outer || unhex(sha256($inner || encode($prefix || v)))), $chars) AS h FROM hmac_input ORDER BY i",
            {"outer": outer, "inner": inner, "prefix": prefix, "chars": PSEUDONYM_HEX_CHARS},
        ).fetchnumpy()["h"]
        return rows.tolist()
    except duckdb.Error:
        return None
    finally:
        con.close()


def pseudonym(secret: bytes, domain: str, value: str) -> str:
    """Keyed pseudonym of a value: `<domain>_<hex>`, HMAC-SHA256 over the domain and normalized value."""
    message = f"{domain}\x1f{normalize(domain, value)}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]
    return f"{domain.lower()}_{digest}"


class KeyedPseudonym(Operator):
    """Presidio operator `pseudonymize`: the same keyed pseudonym in free text as in columns."""

    def operate(self, text: str = None, params: dict | None = None) -> str:  # type: ignore[override]
        params = params or {}
        return pseudonym(params["secret"], params["domain"], text or "")

    def validate(self, params: dict | None = None) -> None:
        params = params or {}
        if not isinstance(params.get("secret"), bytes) or len(params["secret"]) < 32:
            raise ValueError("pseudonymize needs a secret of at least 32 bytes")
        if not params.get("domain"):
            raise ValueError("pseudonymize needs a domain")

    def operator_name(self) -> str:
        return "pseudonymize"

    def operator_type(self) -> OperatorType:
        return OperatorType.Anonymize


@dataclass(frozen=True)
class OperatorContext:
    """What column operators need besides the values: keys, the run's date, where hierarchies live."""

    pseudonym_key: SecretKey
    run_date: date
    hierarchies_dir: Path
    reidentification_key: SecretKey | None = None  # None: break-glass encryption is disabled


def _map_distinct(values: pd.Series, fn: Callable[[str], Any]) -> pd.Series:
    """Apply `fn` once per distinct non-null value and broadcast back; nulls stay null."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.array([fn(str(u)) for u in np.asarray(uniques, dtype=object).tolist()], dtype=object)
    out = np.empty(len(values), dtype=object)
    valid = codes >= 0
    out[valid] = mapped[codes[valid]]
    out[~valid] = None
    return pd.Series(out, index=values.index, dtype="string")


def _map_distinct_many(values: pd.Series, fn: Callable[[pd.Series], list]) -> pd.Series:
    """Like _map_distinct, with `fn` mapping all distinct values at once."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.array(
        fn(pd.Series(np.asarray(uniques, dtype=object)).astype(str)) if len(uniques) else [], dtype=object
    )
    out = np.empty(len(values), dtype=object)
    valid = codes >= 0
    out[valid] = mapped[codes[valid]]
    out[~valid] = None
    return pd.Series(out, index=values.index, dtype="string")


def _age_band(values: pd.Series, width: int, reference: date) -> pd.Series:
    born = pd.to_datetime(values, errors="raise")
    ref = pd.Timestamp(reference)
    had_birthday = (born.dt.month < ref.month) | ((born.dt.month == ref.month) & (born.dt.day <= ref.day))
    age = ref.year - born.dt.year - (~had_birthday).astype(int)
    low = (age // width) * width
    label = low.astype("Int64").astype("string") + "-" + (low + width - 1).astype("Int64").astype("string")
    return label.where(born.notna(), None).astype("string")


def _numeric_bucket(values: pd.Series, width: int) -> pd.Series:
    numbers = pd.to_numeric(values, errors="raise")
    low = (np.floor(numbers / width) * width).astype("Int64")
    label = low.astype("string") + "-" + (low + width - 1).astype("string")
    return label.where(numbers.notna(), None).astype("string")


def _truncate(values: pd.Series, keep: int) -> pd.Series:
    """`v[:keep]` and a `*` for every character cut (column-wise over distinct values)."""
    return _map_distinct_many(values, lambda distinct: _truncated(distinct, keep))


def _arrow(distinct: pd.Series):
    import pyarrow as pa

    return pa.array(distinct.tolist(), pa.string())


def _truncated(distinct: pd.Series, keep: int) -> list[str]:
    import pyarrow.compute as pc

    a = _arrow(distinct)
    stars = pc.binary_repeat("*", pc.max_element_wise(pc.subtract(pc.utf8_length(a), keep), 0))
    return pc.binary_join_element_wise(pc.utf8_slice_codeunits(a, start=0, stop=keep), stars, "").to_pylist()


def masked(
    distinct: pd.Series,
    masking_char: str,
    *,
    chars_to_mask: int | None = None,
    keep_last: int | None = None,
    from_end: bool = False,
) -> list[str]:
    """Presidio's `mask` over many values at once (Arrow; code points, as Python slices): `chars_to_mask`
    characters (or all but the last `keep_last`) replaced from the start, or from the end."""
    import pyarrow.compute as pc

    a = _arrow(distinct)
    length = pc.utf8_length(a)
    if keep_last is not None:
        n = pc.max_element_wise(pc.subtract(length, keep_last), 0)
        if from_end:  # text[:len - n] is the first keep_last characters
            rest = pc.utf8_slice_codeunits(a, start=0, stop=keep_last)
        else:  # text[n:] is the last keep_last characters
            rest = (
                pc.utf8_slice_codeunits(a, start=-keep_last)
                if keep_last > 0
                else pc.utf8_slice_codeunits(a, start=0, stop=0)
            )
    else:
        count = max(chars_to_mask or 0, 0)
        n = pc.min_element_wise(length, count)
        if from_end:
            rest = pc.utf8_slice_codeunits(a, start=0, stop=-count) if count > 0 else a
        else:
            rest = pc.utf8_slice_codeunits(a, start=count)
    stars = pc.binary_repeat(masking_char, n)
    parts = (rest, stars) if from_end else (stars, rest)
    return pc.binary_join_element_wise(*parts, "").to_pylist()


def _dates(values: pd.Series, fmt: str) -> pd.Series:
    """`strftime(fmt)` of each date, formatting each distinct date once (a year has 365)."""
    parsed = pd.to_datetime(values, errors="raise")
    codes, uniques = pd.factorize(parsed, use_na_sentinel=True)
    formatted = np.asarray(pd.Series(uniques).dt.strftime(fmt), dtype=object)
    out = np.empty(len(parsed), dtype=object)
    valid = codes >= 0
    out[valid] = formatted[codes[valid]]
    out[~valid] = None
    return pd.Series(out, index=values.index, dtype="string")


def generalize(values: pd.Series, spec: Generalize, ctx: OperatorContext) -> tuple[pd.Series, dict]:
    """Generalize a quasi-identifier; returns the new values and the parameters to record."""
    params: dict[str, Any] = {"method": spec.method}
    if spec.method == "age_band":
        reference = spec.reference_date or ctx.run_date
        params |= {"width": spec.width, "reference_date": reference.isoformat()}
        return _age_band(values, spec.width, reference), params  # type: ignore[arg-type]
    if spec.method == "date_month":
        return _dates(values, "%Y-%m"), params
    if spec.method == "date_year":
        return _dates(values, "%Y"), params
    if spec.method == "truncate":
        params["keep"] = spec.keep
        return _truncate(values, spec.keep), params  # type: ignore[arg-type]
    if spec.method == "numeric_bucket":
        params["width"] = spec.width
        return _numeric_bucket(values, spec.width), params  # type: ignore[arg-type]
    from pipelines.privacy.hierarchies import load_hierarchy

    hierarchy = load_hierarchy(ctx.hierarchies_dir / spec.hierarchy)  # type: ignore[operator]
    params |= {"hierarchy": spec.hierarchy, "level": spec.level}
    return hierarchy.generalize(values.astype("string"), spec.level).astype("string"), params  # type: ignore[arg-type]


def apply_column(values: pd.Series, column: Column, ctx: OperatorContext) -> tuple[pd.Series | None, dict]:
    """Apply a structured column's operator; None means the column is suppressed (not published)."""
    spec = column.deidentify
    op = spec.operator
    params: dict[str, Any] = {}
    if op == "keep":
        return values, params
    if op == "suppress":
        return None, params
    if op == "redact":
        return pd.Series(pd.NA, index=values.index, dtype="string"), params
    if op == "replace":
        new_value = spec.new_value or f"<{column.entity or 'REDACTED'}>"  # type: ignore[union-attr]
        params["new_value"] = new_value
        return pd.Series(new_value, index=values.index, dtype="string").where(values.notna(), None), params
    if op == "mask":
        keep_last = spec.keep_last  # type: ignore[union-attr]
        params = {"masking_char": spec.masking_char, "from_end": spec.from_end}  # type: ignore[union-attr]
        params |= {"keep_last": keep_last} if keep_last is not None else {"chars_to_mask": spec.chars_to_mask}  # type: ignore[union-attr]
        return _map_distinct_many(
            values,
            lambda distinct: masked(
                distinct,
                spec.masking_char,
                chars_to_mask=spec.chars_to_mask,
                keep_last=keep_last,
                from_end=spec.from_end,  # type: ignore[union-attr]
            ),
        ), params
    if op == "pseudonymize":
        domain = spec.domain or column.entity  # type: ignore[union-attr]
        params = {"domain": domain, "algorithm": "HMAC-SHA256", "key_id": ctx.pseudonym_key.key_id}
        secret = ctx.pseudonym_key.secret
        return _map_distinct_many(values, lambda distinct: pseudonyms(secret, domain, distinct)), params  # type: ignore[arg-type]
    if op == "encrypt":
        if ctx.reidentification_key is None:
            raise PermissionError(
                f"column '{column.name}' asks for break-glass encryption, which is disabled; "
                "set PIPELINES_ENABLE_REIDENTIFICATION=1 and provide a re-identification key"
            )
        encryptor = PresidioEncrypt()
        key = ctx.reidentification_key.secret[:32].decode("ascii")
        params = {"algorithm": "AES-CBC (Presidio encrypt)", "key_id": ctx.reidentification_key.key_id}
        return _map_distinct(values, lambda v: encryptor.operate(v, {"key": key})), params
    if op == "generalize":
        return generalize(values, spec, ctx)  # type: ignore[arg-type]
    raise ValueError(f"operator '{op}' is not a structured-column operator (column '{column.name}')")
