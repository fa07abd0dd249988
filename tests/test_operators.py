"""Every structured-column operator, and keyed pseudonyms."""

from datetime import date

import pandas as pd
import pytest

from pipelines.contracts import Column
from pipelines.privacy.keys import SecretKey, fingerprint
from pipelines.privacy.operators import OperatorContext, apply_column, pseudonym
from pipelines.resources import CONTRACTS_DIR

SECRET = b"k" * 32
CTX = OperatorContext(SecretKey(fingerprint(SECRET), "test", SECRET), date(2026, 1, 31), CONTRACTS_DIR / "hierarchies")


def col(role="quasi_identifier", entity=None, type_="string", **deid) -> Column:
    return Column(name="c", type=type_, role=role, entity=entity, deidentify=deid)


@pytest.mark.parametrize(
    "deid, values, expected",
    [
        ({"operator": "keep"}, ["a", None], ["a", None]),
        ({"operator": "redact"}, ["a", "b"], [None, None]),
        ({"operator": "replace"}, ["123-45-6789", None], ["<US_SSN>", None]),
        ({"operator": "replace", "new_value": "[x]"}, ["a"], ["[x]"]),
        ({"operator": "mask", "keep_last": 4}, ["4111 1111 1111 1234"], ["***************1234"]),
        ({"operator": "mask", "chars_to_mask": 3, "masking_char": "#"}, ["abcdef"], ["###def"]),
        ({"operator": "generalize", "method": "truncate", "keep": 3}, ["94107", None], ["941**", None]),
        ({"operator": "generalize", "method": "date_month"}, ["2025-07-14", "2025-12-01"], ["2025-07", "2025-12"]),
        ({"operator": "generalize", "method": "date_year"}, ["2025-07-14"], ["2025"]),
        (
            {"operator": "generalize", "method": "age_band", "width": 10, "reference_date": "2026-01-31"},
            ["1990-02-01", "1990-01-31", None],
            ["30-39", "30-39", None],
        ),
        (
            {"operator": "generalize", "method": "age_band", "width": 10, "reference_date": "2026-01-30"},
            ["1996-01-31"],
            ["20-29"],
        ),
        (
            {"operator": "generalize", "method": "numeric_bucket", "width": 20000},
            [55000, 20000, None],
            ["40000-59999", "20000-39999", None],
        ),
    ],
)
def test_operator_table(deid, values, expected):
    masking = deid["operator"] in {"replace", "redact", "mask"}
    column = col(
        role="direct_identifier" if masking else "quasi_identifier", entity="US_SSN" if masking else None, **deid
    )
    out, params = apply_column(pd.Series(values), column, CTX)
    assert [None if pd.isna(v) else v for v in out] == expected
    assert "secret" not in params


def test_suppress_drops_column():
    out, _ = apply_column(pd.Series(["a"]), col(role="direct_identifier", entity="PERSON", operator="suppress"), CTX)
    assert out is None


def test_pseudonym_consistent_across_formats_and_columns():
    column = col(role="join_key", entity="EMAIL_ADDRESS", operator="pseudonymize")
    out, params = apply_column(pd.Series(["Jane.Doe@Example.com", " jane.doe@example.com", None]), column, CTX)
    assert out[0] == out[1] == pseudonym(SECRET, "EMAIL_ADDRESS", "jane.doe@example.com")
    assert out[0].startswith("email_address_") and len(out[0]) == len("email_address_") + 16
    assert pd.isna(out[2])
    assert params["key_id"] == CTX.pseudonym_key.key_id and "secret" not in str(params)


@pytest.mark.parametrize(
    "domain, a, b",
    [
        ("PHONE_NUMBER", "+1 (415) 555-0100", "415.555.0100"),
        ("PERSON", "Jane  Doe", "jane doe"),
        ("EMPLOYEE_ID", "e0001234", "E0001234"),
    ],
)
def test_pseudonym_normalizes(domain, a, b):
    assert pseudonym(SECRET, domain, a) == pseudonym(SECRET, domain, b)


def test_pseudonym_depends_on_key_and_domain():
    assert pseudonym(SECRET, "PERSON", "x") != pseudonym(b"z" * 32, "PERSON", "x")
    assert pseudonym(SECRET, "PERSON", "x").split("_")[-1] != pseudonym(SECRET, "EMPLOYEE_ID", "x").split("_")[-1]


def test_encrypt_disabled_by_default():
    with pytest.raises(PermissionError, match="break-glass"):
        apply_column(pd.Series(["a"]), col(role="direct_identifier", entity="PERSON", operator="encrypt"), CTX)


def test_encrypt_round_trip_with_presidio_decrypt():
    from presidio_anonymizer.operators import Decrypt

    reid = b"r" * 32
    ctx = OperatorContext(CTX.pseudonym_key, CTX.run_date, CTX.hierarchies_dir, SecretKey(fingerprint(reid), "t", reid))
    out, params = apply_column(
        pd.Series(["Jane Doe"]), col(role="direct_identifier", entity="PERSON", operator="encrypt"), ctx
    )
    assert out[0] != "Jane Doe"
    assert Decrypt().operate(out[0], {"key": reid.decode()}) == "Jane Doe"
    assert params["key_id"] == fingerprint(reid)


TRICKY = [
    " Jane  Doe ",
    "JANE\tDOE",
    "Straße Müller",
    "ǅemal",
    "+1 (415) 555-0100",
    "1-415-555-0100",
    "415.555.0100",
    "14155550100",
    "123-45-6789",
    "4111 1111 1111 1111",
    "de89 3704 0044 0532 0130 00",
    "e0012345",
    " Bo@Example.COM ",
    "",
    "   ",
    "1",
    "ﬁ ligature",
    "İstanbul",
    "x\u00a0y",
    "line\nbreak",
]


@pytest.mark.parametrize(
    "domain",
    ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IBAN_CODE", "EMPLOYEE_ID", "HOSTNAME"],
)
def test_column_wise_normalization_and_pseudonyms_equal_the_per_value_ones(domain):
    from pipelines.privacy.operators import normalize, normalize_series, pseudonym, pseudonyms

    series = pd.Series(TRICKY, dtype=object)
    assert normalize_series(domain, series).tolist() == [normalize(domain, v) for v in TRICKY]
    secret = b"k" * 32
    assert pseudonyms(secret, domain, series) == [pseudonym(secret, domain, v) for v in TRICKY]


def test_known_identifier_matching_column_wise_equals_per_value():
    from collections import Counter

    from pipelines.privacy.known import KnownIdentifiers

    known = KnownIdentifiers()
    known.add("PERSON", ["Jane Doe", "Ana María Ruiz"])
    known.add("PHONE_NUMBER", ["(415) 555-0100"])
    known.add("EMAIL_ADDRESS", ["jane.doe@example-corp.com"])
    known.add("HOSTNAME", ["fin-laptop-042.corp.example"])
    values = pd.Series(
        [
            "jane  doe",
            "JANE.DOE@example-corp.com",
            "+1 415 555 0100",
            "fin-laptop-042",
            "Jane",
            None,
            "Doe Jane",
            "ana maría ruiz",
        ]
    )
    per_value = Counter(e for v in values.dropna() if (e := known.matches_any(v)))
    assert (
        known.count_matches(values)
        == per_value
        == Counter({"PERSON": 2, "EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "HOSTNAME": 1})
    )


def test_known_identifier_prefilters_never_drop_a_match():
    """The column-wise pre-filters (length, first characters, shape of the normalized value) are exact
    necessary conditions: on format variants, case, spacing, control characters and non-ASCII look-alikes,
    count_matches finds every value that matches_any finds, one by one."""
    import random
    from collections import Counter

    from pipelines.privacy.known import KnownIdentifiers

    known = KnownIdentifiers()
    known.add("PERSON", ["Jane Doe", "Ana María Ruiz", "Strauss Kay"])
    known.add("EMAIL_ADDRESS", ["jane.doe@example-corp.com"])
    known.add("EMPLOYEE_ID", ["E1234567"])
    known.add("IBAN_CODE", ["DE89 3704 0044 0532 0130 00"])
    known.add("HOSTNAME", ["fin-laptop-042.corp.example"])
    rng = random.Random(7)
    base = [
        "Jane Doe",
        "jane.doe@example-corp.com",
        "E1234567",
        "DE89370400440532013000",
        "fin-laptop-042",
        "Strauss Kay",
        "ana maría ruiz",
        "TCK-0001234",
        "E7654321",
        "Jane Dole",
    ]
    variants = {
        "JANE  DOE",
        "  jane doe ",
        "jane\tdoe",
        "jane\x1cdoe",
        "STRAUß KAY",
        "Jane\u00a0Doe",
        " e1234567",
        "e 1234 567",
        "de89 3704 0044 0532 0130 00",
        "JANE.DOE@EXAMPLE-CORP.COM ",
        "fin-laptop-042 ",
        "\x0bE1234567",
    }
    for _ in range(300):
        value = list(rng.choice(base))
        for _ in range(rng.randint(0, 3)):
            i = rng.randrange(len(value) + 1)
            value.insert(i, rng.choice([" ", "  ", "\t", "-", "x", "É"]))
        variants.add("".join(value).upper() if rng.random() < 0.3 else "".join(value))
    values = pd.Series(sorted(variants))
    per_value = Counter(e for v in values if (e := known.matches_any(v)))
    assert per_value["PERSON"] >= 3 and per_value["EMPLOYEE_ID"] >= 2 and per_value["IBAN_CODE"] >= 1
    assert known.count_matches(values) == per_value


def test_known_identifiers_added_after_a_check_are_found_by_the_next():
    from collections import Counter

    from pipelines.privacy.known import KnownIdentifiers

    known = KnownIdentifiers()
    known.add("PERSON", ["Jane Doe"])
    values = pd.Series(["Zoe Quinn", "jane doe", "Ward 7"])
    assert known.count_matches(values) == Counter({"PERSON": 1})
    known.add("PERSON", ["Zoe Quinn"])  # a new first-characters pair ("zo"): the kept pre-filter must not hide it
    assert known.count_matches(values) == Counter({"PERSON": 2})


@pytest.mark.parametrize(
    "chars_to_mask,keep_last", [(None, 4), (None, 0), (None, 30), (3, None), (0, None), (50, None), (-2, None)]
)
@pytest.mark.parametrize("from_end", [False, True])
def test_column_wise_mask_and_truncate_equal_presidio_and_python(chars_to_mask, keep_last, from_end):
    """The Arrow mask gives Presidio's Mask operator's output value for value (code points, not bytes)."""
    from presidio_anonymizer.operators import Mask

    from pipelines.privacy.operators import _truncated, masked

    values = TRICKY + ["日本語テキスト", "4111-1111-1111-1111", "ab"]
    series = pd.Series(values, dtype=object)
    got = masked(series, "#", chars_to_mask=chars_to_mask, keep_last=keep_last, from_end=from_end)
    expected = []
    for v in values:
        count = chars_to_mask if keep_last is None else max(len(v) - keep_last, 0)
        expected.append(Mask().operate(v, {"masking_char": "#", "chars_to_mask": count, "from_end": from_end}))
    assert got == expected
    for keep in (0, 1, 3, 40):
        assert _truncated(series, keep) == [v[:keep] + "*" * max(len(v) - keep, 0) for v in values]


def test_month_and_year_generalization_format_each_date_like_strftime():
    values = pd.Series(pd.to_datetime(["2025-03-02", None, "2024-12-31", "2025-03-02", "1999-01-01"]))
    for method, fmt in (("date_month", "%Y-%m"), ("date_year", "%Y")):
        column = Column(
            name="d",
            type="date",
            role="quasi_identifier",
            entity="DATE_TIME",
            deidentify={"operator": "generalize", "method": method},
        )
        out, _ = apply_column(values, column, CTX)
        assert out.tolist() == [v.strftime(fmt) if pd.notna(v) else pd.NA for v in values]
        assert str(out.dtype) == "string"


def test_known_identifier_matching_on_numbers_and_dates_equals_their_text():
    """Numeric and date columns are de-duplicated before they are turned into text: same counts."""
    from collections import Counter

    from pipelines.privacy.known import KnownIdentifiers

    known = KnownIdentifiers()
    known.add("PHONE_NUMBER", ["4155550100", "12.5"])
    known.add("US_SSN", ["123-45-6789"])
    floats = pd.Series([4155550100.0, 12.5, 12.5, None, 0.1, 123456789.0])
    ints = pd.Series([4155550100, 4155550100, 123456789, 7], dtype="Int64")
    dates = pd.Series(pd.to_datetime(["2025-03-02", "2025-03-02", None]))
    for values in (floats, ints, dates):
        per_value = Counter(e for v in pd.unique(values.dropna().astype(str)) if (e := known.matches_any(v)))
        assert known.count_matches(values) == per_value
    assert known.count_matches(ints) == Counter({"PHONE_NUMBER": 1, "US_SSN": 1})


@pytest.mark.parametrize(
    "secret", [b"k" * 32, bytes(range(64)), bytes(range(200)) * 2]
)  # short, block-sized, longer than a block
def test_column_wise_hmac_equals_python_hmac(monkeypatch, secret):
    import pipelines.privacy.operators as ops

    monkeypatch.setattr(ops, "COLUMN_WISE_HMAC_MIN_VALUES", 1)
    values = pd.Series([*TRICKY, "", "Ana María Ruiz", "x" * 500, "李华", "e1234567 ", "a\x00b"] * 3, dtype=object)
    for domain in ("PERSON", "EMPLOYEE_ID", "EMAIL_ADDRESS"):
        column_wise = ops.pseudonyms(secret, domain, values)
        assert ops._hmac_sha256_column_wise(secret, f"{domain}\x1f", ["a"]) is not None  # the DuckDB path ran
        assert column_wise == [pseudonym(secret, domain, v) for v in values]
