"""Seeded, vectorised generator of realistic departmental landing CSVs plus PII ground truth.

Faker (locale en_US) only builds small vocabularies (names, streets, cities, companies,
zips); rows are composed with numpy so a million rows per department stays fast. All
randomness flows from the seed through named numpy streams, so the same seed gives the
same bytes and a department's file does not depend on which other departments are built.
Rows are materialised in fixed-size chunks from pre-drawn numeric "plans", so chunking
never changes the output either.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from faker import Faker

# ---------------------------------------------------------------------------- constants

SNAPSHOT_DATE = "2026-01-31"
AS_OF = np.datetime64(SNAPSHOT_DATE, "D")
YEAR_2025 = np.datetime64("2025-01-01", "D")
DAYS_2025 = 365
DOB_MIN = np.datetime64("1955-02-01", "D")  # 70 years old on the snapshot date
DOB_MAX = np.datetime64("2007-12-31", "D")  # 18 on the snapshot date, with room to be hired
ADULT_DAYS = 6576  # >= 18 years whatever the leap days, so hire dates follow the 18th birthday
COMPANY_FOUNDED = np.datetime64("1985-01-01", "D")
WORK_DOMAIN = "example-corp.com"
HOST_DOMAIN = "corp.example-corp.com"

CHUNK_ROWS = 100_000
# rows // 2 incidents must fit INC-NNNNNN (6 digits); also keeps memory well under 4 GiB (~1.7 GB at 2M).
MAX_ROWS = 1_999_999
DEPARTMENTS = ("hr", "finance", "it", "support")
GROUND_TRUTH_DIR = "_ground_truth"
PII_VALUES_FILE = "pii_values.csv"
TEXT_SPANS_FILE = "text_spans.jsonl"
ENTITY_ORDER = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "DATE_TIME",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "HOSTNAME",
    "LOCATION",
    "EMPLOYEE_ID",
)

# Real US area codes and exchange rules so numbers look plausible to phone recognisers.
AREA_CODES = (
    201,
    202,
    206,
    212,
    213,
    214,
    215,
    303,
    305,
    310,
    312,
    313,
    404,
    408,
    410,
    415,
    469,
    503,
    510,
    512,
    602,
    609,
    612,
    617,
    646,
    650,
    702,
    704,
    713,
    718,
    720,
    773,
    801,
    808,
    818,
    832,
    858,
    917,
    919,
    925,
    949,
    971,
    972,
)
EXCHANGES = np.array([e for e in range(201, 1000) if e % 100 != 11 and e != 555], dtype=np.int64)
PHONE_FORMATS = ("({a:3}) {e:3}-{l:4}", "+1-{a:3}-{e:3}-{l:4}", "{a:3}-{e:3}-{l:4}", "{a:3}.{e:3}.{l:4}")
PHONE_FORMAT_P = (0.4, 0.25, 0.25, 0.1)

GENDERS = np.array(["F", "M", "X"], dtype=object)
GENDER_P = (0.49, 0.48, 0.03)

ORG_UNITS = (
    "Finance Operations",
    "Financial Planning & Analysis",
    "IT Security",
    "IT Infrastructure",
    "Data Platform",
    "Software Engineering",
    "People & Culture",
    "Talent Acquisition",
    "Customer Support",
    "Sales",
    "Marketing",
    "Legal & Compliance",
)
FAMILY_UNITS: dict[str, tuple[str, ...]] = {
    "engineering": ("Software Engineering", "Data Platform"),
    "data": ("Data Platform", "Financial Planning & Analysis", "Marketing"),
    "it": ("IT Infrastructure", "IT Security"),
    "security": ("IT Security",),
    "finance": ("Finance Operations", "Financial Planning & Analysis"),
    "hr": ("People & Culture", "Talent Acquisition"),
    "support": ("Customer Support",),
    "sales": ("Sales",),
    "marketing": ("Marketing",),
    "legal": ("Legal & Compliance",),
}
# (title, family, salary low, salary high, relative headcount)
TITLES: tuple[tuple[str, str, int, int, float], ...] = (
    ("Software Engineer I", "engineering", 85_000, 110_000, 5),
    ("Software Engineer II", "engineering", 105_000, 135_000, 6),
    ("Senior Software Engineer", "engineering", 135_000, 175_000, 5),
    ("Staff Software Engineer", "engineering", 170_000, 215_000, 2),
    ("Engineering Manager", "engineering", 165_000, 210_000, 1.5),
    ("QA Engineer", "engineering", 80_000, 110_000, 2),
    ("Data Analyst", "data", 70_000, 95_000, 4),
    ("Senior Data Analyst", "data", 90_000, 120_000, 2),
    ("Data Engineer", "data", 100_000, 135_000, 3),
    ("Senior Data Engineer", "data", 130_000, 170_000, 2),
    ("Data Scientist", "data", 115_000, 155_000, 2),
    ("Analytics Manager", "data", 130_000, 165_000, 1),
    ("IT Support Specialist", "it", 50_000, 70_000, 4),
    ("Systems Administrator", "it", 70_000, 95_000, 3),
    ("Network Engineer", "it", 80_000, 110_000, 2),
    ("Cloud Engineer", "it", 105_000, 140_000, 2),
    ("IT Manager", "it", 110_000, 145_000, 1),
    ("Security Analyst", "security", 85_000, 115_000, 2),
    ("Senior Security Engineer", "security", 130_000, 170_000, 1),
    ("Accountant I", "finance", 55_000, 70_000, 3),
    ("Accountant II", "finance", 65_000, 82_000, 3),
    ("Senior Accountant", "finance", 78_000, 98_000, 2),
    ("Financial Analyst", "finance", 70_000, 95_000, 3),
    ("Payroll Specialist", "finance", 52_000, 68_000, 2),
    ("Accounts Payable Clerk", "finance", 40_000, 52_000, 2),
    ("Finance Manager", "finance", 110_000, 140_000, 1),
    ("Controller", "finance", 140_000, 180_000, 0.5),
    ("HR Generalist", "hr", 55_000, 72_000, 2),
    ("HR Business Partner", "hr", 85_000, 115_000, 1.5),
    ("Recruiter", "hr", 55_000, 75_000, 2),
    ("Senior Recruiter", "hr", 72_000, 95_000, 1),
    ("Compensation Analyst", "hr", 70_000, 92_000, 1),
    ("HR Manager", "hr", 100_000, 130_000, 0.5),
    ("Customer Support Representative", "support", 38_000, 50_000, 8),
    ("Senior Support Specialist", "support", 48_000, 62_000, 4),
    ("Support Team Lead", "support", 58_000, 75_000, 2),
    ("Customer Success Manager", "support", 65_000, 90_000, 2),
    ("Account Executive", "sales", 70_000, 120_000, 4),
    ("Sales Development Representative", "sales", 45_000, 60_000, 4),
    ("Marketing Specialist", "marketing", 55_000, 75_000, 2),
    ("Product Marketing Manager", "marketing", 110_000, 145_000, 1),
    ("Compliance Officer", "legal", 85_000, 120_000, 1),
    ("Paralegal", "legal", 52_000, 70_000, 1),
    ("Corporate Counsel", "legal", 150_000, 210_000, 0.5),
)

CARD_PREFIXES = ((4, 1), (51, 2), (52, 2), (53, 2), (54, 2), (55, 2), (6011, 4))  # (prefix, digits)
CARD_PREFIX_P = (0.6, 0.06, 0.06, 0.06, 0.06, 0.06, 0.1)
IBAN_COUNTRIES = ("DE", "GB", "FR", "NL")
IBAN_COUNTRY_P = (0.3, 0.25, 0.25, 0.2)
DE_BANK_CODES = ("10070000", "37040044", "50010517", "20041133", "12030000", "70150000", "43060967", "60050101")
FR_BANK_CODES = ("30004", "30003", "20041", "30002", "10278", "10107", "30066", "11315")
GB_BANK_CODES = ("NWBK", "BARC", "LOYD", "HBUK", "MIDL", "NAIA", "MONZ", "SRLG")
NL_BANK_CODES = ("ABNA", "INGB", "RABO", "TRIO", "SNSB", "ASNB", "KNAB", "BUNQ")

CURRENCIES = np.array(["USD", "EUR", "GBP"], dtype=object)
CURRENCY_P = (0.6, 0.25, 0.15)

PERSONAL_DOMAINS = np.array(
    ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "proton.me"], dtype=object
)
PERSONAL_DOMAIN_P = (0.42, 0.17, 0.14, 0.1, 0.1, 0.04, 0.03)
# Phishing senders: mostly free-mail accounts, some look-alike domains.
EXTERNAL_DOMAINS = np.array(
    [
        "gmail.com",
        "outlook.com",
        "yahoo.com",
        "secure-payroll-update.com",
        "example-corp-support.net",
        "docs-share-online.com",
        "mail.ru",
    ],
    dtype=object,
)
EXTERNAL_DOMAIN_P = (0.3, 0.15, 0.1, 0.15, 0.15, 0.1, 0.05)
EMAIL_SEPARATORS = np.array([".", "", "_", ""], dtype=object)  # last pattern uses the first initial
EMAIL_PATTERN_P = (0.45, 0.25, 0.1, 0.2)

SERVER_ROLES = np.array(["db", "web", "app", "file", "mail", "vpn", "dc", "build"], dtype=object)
PUBLIC_FIRST_OCTETS = np.array([o for o in range(11, 224) if o not in (100, 127, 169, 172, 192)], dtype=np.int64)
HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 4, 8, 14, 16, 16, 14, 12, 14, 16, 15, 13, 10, 7, 5, 4, 3, 2, 1], float)

INCIDENT_CATEGORIES = (
    "phishing",
    "malware",
    "lost device",
    "unauthorized access",
    "data leak",
    "suspicious login",
    "policy violation",
)
INCIDENT_CATEGORY_P = (0.3, 0.14, 0.12, 0.12, 0.08, 0.14, 0.1)
SEVERITIES = np.array(["low", "medium", "high", "critical"], dtype=object)
SEVERITY_P = {  # per category, so a data leak is rarely "low"
    "phishing": (0.35, 0.4, 0.2, 0.05),
    "malware": (0.1, 0.35, 0.4, 0.15),
    "lost device": (0.2, 0.5, 0.25, 0.05),
    "unauthorized access": (0.05, 0.3, 0.45, 0.2),
    "data leak": (0.05, 0.2, 0.45, 0.3),
    "suspicious login": (0.3, 0.45, 0.2, 0.05),
    "policy violation": (0.5, 0.4, 0.1, 0.0),
}

PRODUCTS = np.array(
    [
        "CorpSync Desktop",
        "CorpSync Mobile",
        "Billing Portal",
        "Analytics Dashboard",
        "Smart Router X2",
        "Payments API",
        "Cloud Backup Pro",
        "TeamChat",
        "Identity Manager",
        "Home Security Camera",
    ],
    dtype=object,
)
PRODUCT_P = (0.18, 0.16, 0.12, 0.08, 0.1, 0.05, 0.1, 0.09, 0.04, 0.08)
SATISFACTION = np.array(["", "1", "2", "3", "4", "5"], dtype=object)  # index 0 = not answered
SATISFACTION_P = (0.1, 0.07, 0.09, 0.18, 0.29, 0.27)

# Free-text templates: {slot} placeholders are filled per row; SLOT_ENTITIES says which are PII.
MEMO_TEMPLATES: tuple[tuple[str, float], ...] = (
    ("Taxi to airport", 0.08),
    ("Office supplies", 0.06),
    ("Hotel stay for client visit", 0.06),
    ("Train ticket to client site", 0.05),
    ("Parking at client site", 0.04),
    ("Conference registration", 0.05),
    ("Software subscription renewal", 0.05),
    ("Team offsite catering", 0.04),
    ("Mileage reimbursement", 0.05),
    ("Books and training materials", 0.04),
    ("Home office equipment", 0.04),
    ("Printer toner and paper", 0.04),
    ("Team dinner with {p1_name} and {p2_name}", 0.07),
    ("Client lunch with {p1_name}", 0.06),
    ("Client lunch, contact {p1_email}", 0.04),
    ("Taxi shared with {p1_name}", 0.04),
    ("Coffee with {p1_name}, mobile {p1_phone}", 0.03),
    ("Farewell gift for {p1_name}, organised with {p2_name}", 0.04),
    ("Hotel for {p1_name}; confirmation sent to {p1_email}", 0.04),
    ("Lunch with {p1_name}, follow up at {p1_phone}", 0.04),
    ("Flowers for {p1_name}", 0.04),
)
INCIDENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "phishing": (
        "{reporter_name} reported a phishing email from {external_email}; callback {phone}. "
        "Workstation {host} contacted {external_ip}.",
        "Credential-harvesting link received by {other_name} ({other_email}). Sender {external_email}. "
        "Reported by {reporter_name}.",
        "Spam campaign blocked at the mail gateway; no user interaction observed.",
    ),
    "malware": (
        "EDR flagged malware on {host} ({ip}). User {other_name} was logged in; device isolated.",
        "Ransomware note found on {host}. Beaconing to {external_ip}. Owner {other_name}, reachable at {phone}.",
    ),
    "lost device": (
        "{other_name} lost a company laptop ({host}) while travelling. Contact number {phone}.",
        "Phone belonging to {reporter_name} reported stolen; remote wipe requested. Last seen from {ip}.",
    ),
    "unauthorized access": (
        "Multiple failed logins for {other_email} from {external_ip} followed by a successful sign-in. "
        "{other_name} did not recognise the activity.",
        "{other_name} accessed the payroll share on {host} without approval; reported by {reporter_name}.",
    ),
    "data leak": (
        "{other_name} forwarded a customer list to personal address {external_email} from {host}.",
        "Spreadsheet with employee records uploaded to a public paste site from {ip}. "
        "Suspected account: {other_email}.",
    ),
    "suspicious login": (
        "Impossible-travel alert for {reporter_email}: sign-ins from {ip} and {external_ip} within minutes.",
        "New MFA device registered for {other_email} from {external_ip}; {other_name} confirmed by phone at {phone}.",
    ),
    "policy violation": (
        "Unencrypted USB storage connected to {host} by {other_name}.",
        "Scheduled vulnerability scan found an outdated TLS configuration on {host}.",
        "Shared admin password found in a team wiki page; rotated by {reporter_name}.",
    ),
}
TICKET_TEMPLATES: tuple[tuple[str, float], ...] = (
    ("Hi, this is {name}. My {product} stopped syncing after the last update. Please call me back at {phone}.", 0.14),
    ("Order {order} arrived damaged. Please ship the replacement to {address}. Thanks, {name}", 0.1),
    ("I was charged twice for order {order}. You can reach me at {email}.", 0.1),
    ("Cannot log in to {product}; password reset emails never arrive at {email}. - {name}", 0.1),
    ("Please update my billing address to {address}. Phone: {phone}", 0.08),
    ("{product} keeps crashing on startup. My number is {phone}, email {email}. Regards, {name}", 0.1),
    ("Where is my order {order}? It has not arrived yet.", 0.08),
    ("The {product} app crashes when I open settings.", 0.1),
    ("How do I export my data from {product}?", 0.1),
    ("Please cancel my {product} subscription. {name}", 0.1),
)
SLOT_ENTITIES: dict[str, str | None] = {
    "p1_name": "PERSON",
    "p2_name": "PERSON",
    "p1_email": "EMAIL_ADDRESS",
    "p1_phone": "PHONE_NUMBER",
    "reporter_name": "PERSON",
    "reporter_email": "EMAIL_ADDRESS",
    "other_name": "PERSON",
    "other_email": "EMAIL_ADDRESS",
    "external_email": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER",
    "host": "HOSTNAME",
    "ip": "IP_ADDRESS",
    "external_ip": "IP_ADDRESS",
    "name": "PERSON",
    "email": "EMAIL_ADDRESS",
    "address": "LOCATION",
    "order": None,
    "product": None,  # order numbers and products are not personal data
}


# ---------------------------------------------------------------------------- dataset specs


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of one landing file: where it goes and which columns hold PII."""

    name: str
    department: str
    stem: str
    columns: tuple[str, ...]
    identifiers: Mapping[str, str]  # direct-identifier column -> entity type
    text_column: str | None

    def path(self, out_dir: Path) -> Path:
        """Location of this dataset's CSV under out_dir."""
        return out_dir / self.department / f"{self.stem}_{SNAPSHOT_DATE}.csv"


SPECS: dict[str, DatasetSpec] = {
    "hr": DatasetSpec(
        "hr_employees",
        "hr",
        "employees",
        (
            "employee_id",
            "full_name",
            "email",
            "phone",
            "ssn",
            "date_of_birth",
            "gender",
            "postcode",
            "job_title",
            "org_unit",
            "salary",
            "hire_date",
        ),
        {
            "employee_id": "EMPLOYEE_ID",
            "full_name": "PERSON",
            "email": "EMAIL_ADDRESS",
            "phone": "PHONE_NUMBER",
            "ssn": "US_SSN",
            "date_of_birth": "DATE_TIME",
        },
        None,
    ),
    "finance": DatasetSpec(
        "finance_expense_claims",
        "finance",
        "expense_claims",
        ("claim_id", "employee_id", "card_number", "iban", "amount", "currency", "merchant", "claim_date", "memo"),
        {"employee_id": "EMPLOYEE_ID", "card_number": "CREDIT_CARD", "iban": "IBAN_CODE"},
        "memo",
    ),
    "it": DatasetSpec(
        "it_security_incidents",
        "it",
        "security_incidents",
        ("incident_id", "reported_at", "reporter_email", "host", "ip_address", "category", "severity", "description"),
        {"reporter_email": "EMAIL_ADDRESS", "host": "HOSTNAME", "ip_address": "IP_ADDRESS"},
        "description",
    ),
    "support": DatasetSpec(
        "support_tickets",
        "support",
        "tickets",
        (
            "ticket_id",
            "customer_name",
            "customer_email",
            "customer_phone",
            "postcode",
            "opened_at",
            "product",
            "satisfaction",
            "body",
        ),
        {"customer_name": "PERSON", "customer_email": "EMAIL_ADDRESS", "customer_phone": "PHONE_NUMBER"},
        "body",
    ),
}


def dataset_rows(department: str, rows: int) -> int:
    """Row count of a department's file for a generator run of `rows`."""
    return {"hr": rows, "finance": 2 * rows, "it": max(1, rows // 2), "support": rows}[department]


# ---------------------------------------------------------------------------- small helpers


def stream(seed: int, name: str) -> np.random.Generator:
    """Independent numpy generator per named stream (crc32, not hash(), so it is stable)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("ascii"))])


def normalised(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weights scaled to probabilities."""
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


def zipf_p(n: int, exponent: float = 0.8) -> np.ndarray:
    """Rank-based Zipf-like probabilities, so pools have common and rare values."""
    return normalised(1.0 / np.arange(1, n + 1) ** exponent)


def objects(items: Iterable[str], n: int) -> np.ndarray:
    """Object array of Python strings (numpy's '<U' dtype is slow to concatenate)."""
    out = np.empty(n, dtype=object)
    out[:] = list(items)
    return out


def int_strings(values: np.ndarray) -> np.ndarray:
    """Decimal strings of an int array."""
    return objects(map(str, np.asarray(values).tolist()), len(values))


def str_lengths(values: np.ndarray) -> np.ndarray:
    """Character length of each string in an object array."""
    return np.fromiter(map(len, values), dtype=np.int64, count=len(values))


def ascii_block(text: str, n: int) -> np.ndarray:
    """The same ASCII literal repeated on n rows, as an (n, len) uint8 block."""
    return np.broadcast_to(np.frombuffer(text.encode("ascii"), dtype=np.uint8), (n, len(text)))


def code_block(codes: Sequence[str], index: np.ndarray) -> np.ndarray:
    """Rows of equal-width ASCII codes picked by index, as a uint8 block."""
    table = np.frombuffer("".join(codes).encode("ascii"), dtype=np.uint8).reshape(len(codes), -1)
    return table[index]


def digit_block(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded ASCII digits of non-negative ints, as an (n, width) uint8 block."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (np.asarray(values, dtype=np.int64)[:, None] // powers % 10 + 48).astype(np.uint8)


def block_strings(*blocks: np.ndarray) -> np.ndarray:
    """Join uint8 blocks side by side and decode each row to a str (C speed via the 'S' dtype)."""
    m = np.ascontiguousarray(np.hstack(blocks), dtype=np.uint8)
    if m.shape[1] == 0:
        return np.full(m.shape[0], "", dtype=object)
    return m.view(f"S{m.shape[1]}").reshape(m.shape[0]).astype(str).astype(object)


def digit_pattern(pattern: str, **fields: np.ndarray) -> np.ndarray:
    """Render a fixed-width pattern such as '{a:3}-{b:2}' from int arrays."""
    n = len(next(iter(fields.values())))
    blocks = []
    for literal, name, spec, _ in Formatter().parse(pattern):
        if literal:
            blocks.append(ascii_block(literal, n))
        if name:
            blocks.append(digit_block(fields[name], int(spec)))
    return block_strings(*blocks)


def id_strings(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Sequential business keys like CLM-0000001."""
    return digit_pattern(prefix + "{n:" + str(width) + "}", n=numbers)


def day_strings(days: np.ndarray) -> np.ndarray:
    """YYYY-MM-DD strings of datetime64[D] values."""
    return np.datetime_as_string(days, unit="D").astype(object)


def minute_timestamps(days: np.ndarray, minutes: np.ndarray, seconds: np.ndarray | None = None) -> np.ndarray:
    """ISO datetimes (YYYY-MM-DDTHH:MM:SS) from a day plus minute-of-day (plus seconds)."""
    ts = days.astype("datetime64[s]") + minutes.astype("timedelta64[m]")
    if seconds is not None:
        ts = ts + seconds.astype("timedelta64[s]")
    return np.datetime_as_string(ts, unit="s").astype(object)


def rank_within_groups(keys: np.ndarray) -> np.ndarray:
    """0-based occurrence number of each key among equal keys, in row order."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]] if len(keys) else np.zeros(0, bool)
    positions = np.arange(len(keys))
    group_start = np.maximum.accumulate(np.where(starts, positions, 0)) if len(keys) else positions
    ranks = np.empty(len(keys), dtype=np.int64)
    ranks[order] = positions - group_start
    return ranks


def others(rng: np.random.Generator, subject: np.ndarray, population: int) -> tuple[np.ndarray, np.ndarray]:
    """Two people per row, distinct from the subject and from each other when possible."""
    n = len(subject)
    first = rng.integers(0, max(population - 1, 1), n)
    second = rng.integers(0, max(population - 2, 1), n)
    second = np.where(second >= first, second + 1, second)  # skip the first pick
    return (subject + 1 + first) % population, (subject + 1 + second) % population


# ---------------------------------------------------------------------------- vocabulary (Faker)


@dataclass(frozen=True)
class Vocabulary:
    """Small seeded pools built with Faker; rows index into them."""

    first: np.ndarray
    first_slug: np.ndarray
    first_initial: np.ndarray
    female: np.ndarray  # indices into first usable for gender F
    male: np.ndarray
    female_p: np.ndarray
    male_p: np.ndarray
    first_p: np.ndarray
    last: np.ndarray
    last_slug: np.ndarray
    last_p: np.ndarray
    streets: np.ndarray
    cities: np.ndarray
    city_p: np.ndarray
    companies: np.ndarray
    company_p: np.ndarray
    zips: np.ndarray
    zip_p: np.ndarray


def slug(name: str) -> str:
    """Lowercase a-z only, as used in email local parts."""
    return "".join(ch for ch in name.lower() if "a" <= ch <= "z")


def faker_pool(fake: Faker, method: str, draws: int, limit: int | None = None) -> list[str]:
    """Distinct values of repeated Faker calls in first-seen order, so popular values rank first."""
    seen: dict[str, None] = {}
    for _ in range(draws):
        seen[getattr(fake, method)()] = None
        if limit is not None and len(seen) >= limit:
            break
    return list(seen)


def unique_by_slug(names: Iterable[str]) -> list[str]:
    """Drop names whose email slug is empty or already taken, keeping emails unambiguous."""
    kept: dict[str, str] = {}
    for name in names:
        key = slug(name)
        if key and key not in kept:
            kept[key] = name
    return list(kept.values())


@functools.lru_cache(maxsize=4)  # pure in the seed and the slowest Faker part; never mutated
def build_vocabulary(seed: int) -> Vocabulary:
    """Seeded Faker (en_US) pools of names, places, companies and zips."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    female_names = faker_pool(fake, "first_name_female", 4_000)
    male_names = faker_pool(fake, "first_name_male", 4_000)
    first = unique_by_slug(female_names + male_names)
    female_set, male_set = set(female_names), set(male_names)  # membership only, never iterated
    female = np.array([i for i, name in enumerate(first) if name in female_set], dtype=np.int64)
    male = np.array([i for i, name in enumerate(first) if name in male_set], dtype=np.int64)
    last = unique_by_slug(faker_pool(fake, "last_name", 6_000))  # ~950 of Faker's 1000 surnames
    cities = faker_pool(fake, "city", 1_500)
    companies = faker_pool(fake, "company", 2_500)
    zips = faker_pool(fake, "zipcode_in_state", 3_000, limit=300)
    streets = faker_pool(fake, "street_name", 2_000)
    # Popularity follows first-seen order within each gender list, so weight by rank there.
    female_rank = np.array([female_names.index(first[i]) for i in female], dtype=float)
    male_rank = np.array([male_names.index(first[i]) for i in male], dtype=float)
    return Vocabulary(
        first=objects(first, len(first)),
        first_slug=objects(map(slug, first), len(first)),
        first_initial=objects((slug(f)[0] for f in first), len(first)),
        female=female,
        male=male,
        female_p=normalised(1.0 / (female_rank + 1) ** 0.6),
        male_p=normalised(1.0 / (male_rank + 1) ** 0.6),
        first_p=zipf_p(len(first), 0.6),
        last=objects(last, len(last)),
        last_slug=objects(map(slug, last), len(last)),
        last_p=zipf_p(len(last), 0.6),
        streets=objects(streets, len(streets)),
        cities=objects(cities, len(cities)),
        city_p=zipf_p(len(cities)),
        companies=objects(companies, len(companies)),
        company_p=zipf_p(len(companies), 0.9),
        zips=objects(zips, len(zips)),
        zip_p=zipf_p(len(zips), 0.7),
    )


# ---------------------------------------------------------------------------- people and identifiers


def draw_names(rng: np.random.Generator, vocab: Vocabulary, gender: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-name (matching gender) and last-name pool indices."""
    first = np.empty(len(gender), dtype=np.int64)
    pools = ((vocab.female, vocab.female_p), (vocab.male, vocab.male_p), (np.arange(len(vocab.first)), vocab.first_p))
    for code, (pool, p) in enumerate(pools):
        mask = gender == code
        first[mask] = rng.choice(pool, size=int(mask.sum()), p=p)
    last = rng.choice(len(vocab.last), size=len(gender), p=vocab.last_p)
    return first, last


def full_names(vocab: Vocabulary, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """'First Last' display names."""
    return vocab.first[first] + " " + vocab.last[last]


def random_phone_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ten-digit US numbers (area * 1e7 + exchange * 1e4 + line) with valid area/exchange codes."""
    area = np.asarray(AREA_CODES, dtype=np.int64)[rng.integers(0, len(AREA_CODES), n)]
    exchange = EXCHANGES[rng.integers(0, len(EXCHANGES), n)]
    return area * 10_000_000 + exchange * 10_000 + rng.integers(0, 10_000, n)


def phone_formats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Which printed phone layout each occurrence uses."""
    return rng.choice(len(PHONE_FORMATS), size=n, p=PHONE_FORMAT_P)


def format_phones(numbers: np.ndarray, fmt: np.ndarray) -> np.ndarray:
    """Print ten-digit numbers in the chosen US layouts."""
    out = np.empty(len(numbers), dtype=object)
    for code, pattern in enumerate(PHONE_FORMATS):
        mask = fmt == code
        if mask.any():
            x = numbers[mask]
            out[mask] = digit_pattern(pattern, a=x // 10_000_000, e=x // 10_000 % 1000, l=x % 10_000)
    return out


SSN_AREAS = np.array([a for a in range(1, 900) if a != 666], dtype=np.int64)
SSN_SPACE = len(SSN_AREAS) * 99 * 9999  # every valid area x group 01-99 x serial 0001-9999


def format_ssns(codes: np.ndarray) -> np.ndarray:
    """Decode indices into the valid SSN space and print them as AAA-GG-SSSS."""
    area = SSN_AREAS[codes // (99 * 9999)]
    group = codes // 9999 % 99 + 1
    serial = codes % 9999 + 1
    return digit_pattern("{a:3}-{g:2}-{s:4}", a=area, g=group, s=serial)


def luhn_check_digits(payload: np.ndarray) -> np.ndarray:
    """Luhn check digit for 15-digit payloads (the check digit makes 16)."""
    digits = digit_block(payload, 15).astype(np.int64) - 48
    doubled = digits[:, ::2] * 2  # with 15 payload digits the even positions get doubled
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = doubled.sum(axis=1) + digits[:, 1::2].sum(axis=1)
    return (10 - total % 10) % 10


def card_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Luhn-valid 16-digit Visa/Mastercard/Discover numbers as int64."""
    choice = rng.choice(len(CARD_PREFIXES), size=n, p=CARD_PREFIX_P)
    prefix = np.array([p for p, _ in CARD_PREFIXES], dtype=np.int64)[choice]
    free = 15 - np.array([d for _, d in CARD_PREFIXES], dtype=np.int64)[choice]
    scale = 10**free
    payload = prefix * scale + (rng.random(n) * scale).astype(np.int64)
    return payload * 10 + luhn_check_digits(payload)


def format_cards(cards: np.ndarray, spaced: np.ndarray) -> np.ndarray:
    """Cards printed as 16 digits or as four groups of four."""
    out = digit_pattern("{c:16}", c=cards)
    if spaced.any():
        c = cards[spaced]
        out[spaced] = digit_pattern(
            "{a:4} {b:4} {c:4} {d:4}", a=c // 10**12, b=c // 10**8 % 10**4, c=c // 10**4 % 10**4, d=c % 10**4
        )
    return out


def iban_check_digits(bban: np.ndarray, country: str) -> np.ndarray:
    """ISO 13616 check digits: 98 - (BBAN + country + '00' as digits, letters A=10..Z=35) mod 97."""
    m = np.hstack([bban, ascii_block(country + "00", len(bban))]).astype(np.int64)
    rem = np.zeros(len(bban), dtype=np.int64)
    for col in m.T:
        letter = col >= 65
        rem = np.where(letter, rem * 100 + (col - 55), rem * 10 + (col - 48)) % 97
    return 98 - rem


def bban_block(rng: np.random.Generator, country: str, n: int) -> np.ndarray:
    """Country-shaped basic bank account numbers (bank code from a real-looking pool)."""
    bank = rng.integers(0, 8, n)
    if country == "DE":
        return np.hstack([code_block(DE_BANK_CODES, bank), digit_block(rng.integers(0, 10**10, n), 10)])
    if country == "GB":
        return np.hstack(
            [
                code_block(GB_BANK_CODES, bank),
                digit_block(rng.integers(0, 10**6, n), 6),
                digit_block(rng.integers(0, 10**8, n), 8),
            ]
        )
    if country == "NL":
        return np.hstack([code_block(NL_BANK_CODES, bank), digit_block(rng.integers(0, 10**10, n), 10)])
    bank_code = np.array([int(c) for c in FR_BANK_CODES], dtype=np.int64)[bank]
    branch = rng.integers(0, 10**5, n)
    account = rng.integers(0, 10**11, n)
    rib_key = 97 - (89 * bank_code + 15 * branch + 3 * account) % 97  # French RIB key, so FR ibans look real
    return np.hstack(
        [code_block(FR_BANK_CODES, bank), digit_block(branch, 5), digit_block(account, 11), digit_block(rib_key, 2)]
    )


def iban_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Checksum-valid DE/GB/FR/NL IBANs without spaces."""
    country = rng.choice(len(IBAN_COUNTRIES), size=n, p=IBAN_COUNTRY_P)
    out = np.empty(n, dtype=object)
    for code, cc in enumerate(IBAN_COUNTRIES):
        mask = country == code
        bban = bban_block(rng, cc, int(mask.sum()))
        out[mask] = block_strings(ascii_block(cc, len(bban)), digit_block(iban_check_digits(bban, cc), 2), bban)
    return out


def random_ipv4(rng: np.random.Generator, n: int, private_share: float) -> np.ndarray:
    """IPv4 addresses as ints: a share from 10/8, 172.16/12 and 192.168/16, the rest public."""
    octets = rng.integers(0, 256, size=(n, 4))
    octets[:, 3] = rng.integers(1, 255, n)  # no network or broadcast host parts
    private = rng.random(n) < private_share
    block = rng.choice(3, size=n, p=(0.5, 0.2, 0.3))
    public_first = PUBLIC_FIRST_OCTETS[rng.integers(0, len(PUBLIC_FIRST_OCTETS), n)]
    octets[:, 0] = np.where(private, np.array([10, 172, 192])[block], public_first)
    octets[:, 1] = np.where(private & (block == 1), 16 + octets[:, 1] % 16, octets[:, 1])
    octets[:, 1] = np.where(private & (block == 2), 168, octets[:, 1])
    return (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]


OCTETS = objects(map(str, range(256)), 256)


def format_ips(ips: np.ndarray) -> np.ndarray:
    """Dotted-quad strings of int IPv4 addresses."""
    return (
        OCTETS[ips >> 24 & 255] + "." + OCTETS[ips >> 16 & 255] + "." + OCTETS[ips >> 8 & 255] + "." + OCTETS[ips & 255]
    )


def personal_emails(
    vocab: Vocabulary,
    domains: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    pattern: np.ndarray,
    number: np.ndarray,
    domain: np.ndarray,
) -> np.ndarray:
    """Free-mail style addresses: first.last42, firstlast, first_last, flast7 at a personal domain."""
    head = np.where(pattern == 3, vocab.first_initial[first], vocab.first_slug[first])
    suffix = np.where(number > 0, int_strings(number), "")
    return head + EMAIL_SEPARATORS[pattern] + vocab.last_slug[last] + suffix + "@" + domains[domain]


@dataclass(frozen=True)
class EmailPlan:
    """Random choices behind personal email addresses."""

    first: np.ndarray
    last: np.ndarray
    pattern: np.ndarray
    number: np.ndarray
    domain: np.ndarray


def draw_email_plan(
    rng: np.random.Generator, first: np.ndarray, last: np.ndarray, domain_p: Sequence[float]
) -> EmailPlan:
    """Pattern, number (0 = none) and domain for each personal address."""
    n = len(first)
    number = np.where(rng.random(n) < 0.6, rng.integers(1, 1000, n), 0)
    return EmailPlan(
        first,
        last,
        rng.choice(len(EMAIL_PATTERN_P), size=n, p=EMAIL_PATTERN_P),
        number,
        rng.choice(len(domain_p), size=n, p=domain_p),
    )


def unique_personal_emails(vocab: Vocabulary, domains: np.ndarray, plan: EmailPlan) -> np.ndarray:
    """One address per person, renumbering repeats so no two people share a mailbox."""
    bare = personal_emails(vocab, domains, plan.first, plan.last, plan.pattern, np.zeros_like(plan.number), plan.domain)
    groups = pa.array(bare, type=pa.string()).dictionary_encode().indices.to_numpy()
    rank = rank_within_groups(groups)
    # Repeats take numbers from their own block of a thousand; local parts end in a letter before the
    # number, so addresses from different groups cannot collide either.
    number = np.where(rank == 0, plan.number, rank * 1000 + np.maximum(plan.number, 1))
    return personal_emails(vocab, domains, plan.first, plan.last, plan.pattern, number, plan.domain)


# ---------------------------------------------------------------------------- employees (shared by all departments)


@dataclass(frozen=True)
class Employees:
    """Numeric description of the workforce; every department materialises strings from it."""

    number: np.ndarray
    first: np.ndarray
    last: np.ndarray
    gender: np.ndarray
    email_number: np.ndarray
    phone: np.ndarray
    phone_fmt: np.ndarray
    ssn: np.ndarray
    dob: np.ndarray
    hire: np.ndarray
    zip: np.ndarray
    title: np.ndarray
    org: np.ndarray
    salary: np.ndarray
    card: np.ndarray
    iban: np.ndarray

    @property
    def size(self) -> int:
        """Headcount."""
        return len(self.number)

    def ids(self, idx: np.ndarray) -> np.ndarray:
        """Employee ids like E0001234."""
        return id_strings("E", self.number[idx], 7)

    def names(self, vocab: Vocabulary, idx: np.ndarray) -> np.ndarray:
        """Full names."""
        return full_names(vocab, self.first[idx], self.last[idx])

    def emails(self, vocab: Vocabulary, idx: np.ndarray) -> np.ndarray:
        """Work emails like jane.doe42@example-corp.com (unique by construction)."""
        return (
            vocab.first_slug[self.first[idx]]
            + "."
            + vocab.last_slug[self.last[idx]]
            + int_strings(self.email_number[idx])
            + "@"
            + WORK_DOMAIN
        )


def org_units_for(rng: np.random.Generator, title: np.ndarray) -> np.ndarray:
    """An org unit consistent with each title's job family."""
    units = [[ORG_UNITS.index(u) for u in FAMILY_UNITS[family]] for _, family, *_ in TITLES]
    width = max(map(len, units))
    table = np.array([u + [u[0]] * (width - len(u)) for u in units], dtype=np.int64)
    counts = np.array([len(u) for u in units], dtype=np.int64)
    return table[title, (rng.random(len(title)) * counts[title]).astype(np.int64)]


def build_employees(rng: np.random.Generator, vocab: Vocabulary, n: int) -> Employees:
    """Draw the whole workforce; uniqueness of ids, emails and SSNs holds by construction."""
    number = rng.choice(10**7 - 1, size=n, replace=False) + 1
    gender = rng.choice(3, size=n, p=GENDER_P)
    first, last = draw_names(rng, vocab, gender)
    # Same (first, last) pair -> occurrence rank picks a disjoint number range, so emails never collide.
    rank = rank_within_groups(first * len(vocab.last) + last)
    email_number = rank * 100 + rng.integers(1, 100, n)
    phone = random_phone_numbers(rng, n)
    phone_fmt = phone_formats(rng, n)
    ssn = rng.choice(SSN_SPACE, size=n, replace=False)
    dob_span = int((DOB_MAX - DOB_MIN).astype(int)) + 1
    dob = DOB_MIN + np.minimum((rng.beta(2.0, 2.6, n) * dob_span).astype(np.int64), dob_span - 1)
    hire_lo = np.maximum(dob + ADULT_DAYS, COMPANY_FOUNDED)
    hire_hi = AS_OF - 1
    span = (hire_hi - hire_lo).astype(np.int64) + 1
    hire = hire_hi - np.minimum((rng.random(n) ** 2 * span).astype(np.int64), span - 1)  # skew to recent hires
    zip_idx = rng.choice(len(vocab.zips), size=n, p=vocab.zip_p)
    title = rng.choice(len(TITLES), size=n, p=normalised([t[4] for t in TITLES]))
    org = org_units_for(rng, title)
    lo = np.array([t[2] for t in TITLES], dtype=np.int64)[title]
    hi = np.array([t[3] for t in TITLES], dtype=np.int64)[title]
    salary = ((lo + rng.random(n) * (hi - lo)) / 100).round().astype(np.int64) * 100
    return Employees(
        number,
        first,
        last,
        gender,
        email_number,
        phone,
        phone_fmt,
        ssn,
        dob,
        hire,
        zip_idx,
        title,
        org,
        salary,
        card_numbers(rng, n),
        iban_numbers(rng, n),
    )


# ---------------------------------------------------------------------------- free text with exact spans

SlotFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class RenderedText:
    """Texts of a chunk, their JSON span lists (None where no PII) and the PII values found."""

    texts: np.ndarray
    spans: np.ndarray
    found: list[tuple[str, np.ndarray]]


def span_json(entity: str, start: np.ndarray, end: np.ndarray, values: np.ndarray) -> np.ndarray:
    """One JSON span object per row, built column-wise."""
    quoted = objects(map(json.dumps, values), len(values))
    return (
        '{"entity_type": "'
        + entity
        + '", "start": '
        + int_strings(start)
        + ', "end": '
        + int_strings(end)
        + ', "value": '
        + quoted
        + "}"
    )


def render_texts(templates: Sequence[str], choice: np.ndarray, slots: Mapping[str, SlotFn]) -> RenderedText:
    """Fill each row's template; offsets are summed piece lengths, so spans are exact by construction."""
    n = len(choice)
    texts = np.empty(n, dtype=object)
    spans = np.full(n, None, dtype=object)
    found: list[tuple[str, np.ndarray]] = []
    for t, template in enumerate(templates):
        rows = np.flatnonzero(choice == t)
        if rows.size == 0:
            continue
        text = np.full(rows.size, "", dtype=object)
        pos = np.zeros(rows.size, dtype=np.int64)
        pieces: list[np.ndarray] = []
        for literal, slot, _, _ in Formatter().parse(template):
            if literal:
                text = text + literal
                pos = pos + len(literal)
            if not slot:
                continue
            values = slots[slot](rows)
            end = pos + str_lengths(values)
            entity = SLOT_ENTITIES[slot]
            if entity is not None:
                pieces.append(span_json(entity, pos, end, values))
                found.append((entity, values))
            text = text + values
            pos = end
        texts[rows] = text
        if pieces:
            joined = pieces[0]
            for piece in pieces[1:]:
                joined = joined + ", " + piece
            spans[rows] = "[" + joined + "]"
    return RenderedText(texts, spans, found)


# ---------------------------------------------------------------------------- department plans and chunks


@dataclass
class Chunk:
    """Materialised rows: CSV columns, free-text spans and the PII values embedded in the text."""

    columns: dict[str, np.ndarray]
    spans: np.ndarray | None
    pii: list[tuple[str, str, np.ndarray]]  # (column, entity type, values) found in free text


@dataclass(frozen=True)
class Context:
    """Everything chunk builders read: pools and the workforce."""

    vocab: Vocabulary
    employees: Employees


def with_text(spec: DatasetSpec, columns: dict[str, np.ndarray], rendered: RenderedText) -> Chunk:
    """Attach a rendered free-text column and its PII to a chunk."""
    assert spec.text_column is not None
    columns[spec.text_column] = rendered.texts
    return Chunk(columns, rendered.spans, [(spec.text_column, e, v) for e, v in rendered.found])


TITLE_NAMES = objects((t[0] for t in TITLES), len(TITLES))
ORG_UNIT_NAMES = objects(ORG_UNITS, len(ORG_UNITS))
CATEGORY_NAMES = objects(INCIDENT_CATEGORIES, len(INCIDENT_CATEGORIES))


def hr_chunk(ctx: Context, start: int, stop: int) -> Chunk:
    """HR employee rows [start, stop)."""
    emp, vocab = ctx.employees, ctx.vocab
    idx = np.arange(start, stop)
    columns = {
        "employee_id": emp.ids(idx),
        "full_name": emp.names(vocab, idx),
        "email": emp.emails(vocab, idx),
        "phone": format_phones(emp.phone[idx], emp.phone_fmt[idx]),
        "ssn": format_ssns(emp.ssn[idx]),
        "date_of_birth": day_strings(emp.dob[idx]),
        "gender": GENDERS[emp.gender[idx]],
        "postcode": vocab.zips[emp.zip[idx]],
        "job_title": TITLE_NAMES[emp.title[idx]],
        "org_unit": ORG_UNIT_NAMES[emp.org[idx]],
        "salary": int_strings(emp.salary[idx]),
        "hire_date": day_strings(emp.hire[idx]),
    }
    return Chunk(columns, None, [])


@dataclass(frozen=True)
class FinancePlan:
    """Random draws behind the expense claims."""

    claimant: np.ndarray
    spaced_card: np.ndarray
    cents: np.ndarray
    currency: np.ndarray
    merchant: np.ndarray
    day: np.ndarray
    template: np.ndarray
    p1: np.ndarray
    p2: np.ndarray
    phone_fmt: np.ndarray


def plan_finance(rng: np.random.Generator, vocab: Vocabulary, employees: int, n: int) -> FinancePlan:
    """Claims skewed towards frequent claimants, log-normal amounts, ~40% memos naming people."""
    claimant = (rng.random(n) ** 1.5 * employees).astype(np.int64)  # a few people claim a lot
    p1, p2 = others(rng, claimant, employees)
    cents = np.clip(np.round(rng.lognormal(np.log(4500), 0.9, n)), 100, 499_999).astype(np.int64)
    return FinancePlan(
        claimant=claimant,
        spaced_card=rng.random(n) < 0.3,
        cents=cents,
        currency=rng.choice(len(CURRENCIES), size=n, p=CURRENCY_P),
        merchant=rng.choice(len(vocab.companies), size=n, p=vocab.company_p),
        day=YEAR_2025 + rng.integers(0, DAYS_2025, n),
        template=rng.choice(len(MEMO_TEMPLATES), size=n, p=normalised([w for _, w in MEMO_TEMPLATES])),
        p1=p1,
        p2=p2,
        phone_fmt=phone_formats(rng, n),
    )


CENTS = objects((f"{c:02d}" for c in range(100)), 100)


def format_amounts(cents: np.ndarray) -> np.ndarray:
    """Two-decimal amounts from integer cents (no float rounding surprises)."""
    return int_strings(cents // 100) + "." + CENTS[cents % 100]


def finance_chunk(ctx: Context, plan: FinancePlan, start: int, stop: int) -> Chunk:
    """Expense claim rows [start, stop)."""
    emp, vocab = ctx.employees, ctx.vocab
    sl = slice(start, stop)
    who = plan.claimant[sl]
    p1, p2, fmt = plan.p1[sl], plan.p2[sl], plan.phone_fmt[sl]
    columns = {
        "claim_id": id_strings("CLM-", np.arange(start + 1, stop + 1), 7),
        "employee_id": emp.ids(who),
        "card_number": format_cards(emp.card[who], plan.spaced_card[sl]),
        "iban": emp.iban[who],
        "amount": format_amounts(plan.cents[sl]),
        "currency": CURRENCIES[plan.currency[sl]],
        "merchant": vocab.companies[plan.merchant[sl]],
        "claim_date": day_strings(plan.day[sl]),
    }
    slots: dict[str, SlotFn] = {
        "p1_name": lambda r: emp.names(vocab, p1[r]),
        "p2_name": lambda r: emp.names(vocab, p2[r]),
        "p1_email": lambda r: emp.emails(vocab, p1[r]),
        "p1_phone": lambda r: format_phones(emp.phone[p1[r]], fmt[r]),
    }
    rendered = render_texts([t for t, _ in MEMO_TEMPLATES], plan.template[sl], slots)
    return with_text(SPECS["finance"], columns, rendered)


@dataclass(frozen=True)
class ItPlan:
    """Random draws behind the security incidents."""

    day: np.ndarray
    minute: np.ndarray
    reporter: np.ndarray
    other: np.ndarray
    host_kind: np.ndarray
    host_number: np.ndarray
    host_role: np.ndarray
    host_fqdn: np.ndarray
    ip: np.ndarray
    external_ip: np.ndarray
    category: np.ndarray
    severity: np.ndarray
    template: np.ndarray
    external: EmailPlan
    phone: np.ndarray
    phone_fmt: np.ndarray


IT_TEMPLATE_LIST = [t for c in INCIDENT_CATEGORIES for t in INCIDENT_TEMPLATES[c]]
IT_TEMPLATE_OFFSET = np.cumsum([0] + [len(INCIDENT_TEMPLATES[c]) for c in INCIDENT_CATEGORIES])


def plan_it(rng: np.random.Generator, vocab: Vocabulary, employees: int, n: int) -> ItPlan:
    """Incidents during 2025 business hours; severity and wording depend on the category."""
    reporter = rng.integers(0, employees, n)
    other, _ = others(rng, reporter, employees)
    category = rng.choice(len(INCIDENT_CATEGORIES), size=n, p=INCIDENT_CATEGORY_P)
    severity = np.empty(n, dtype=np.int64)
    for code, name in enumerate(INCIDENT_CATEGORIES):
        mask = category == code
        severity[mask] = rng.choice(len(SEVERITIES), size=int(mask.sum()), p=SEVERITY_P[name])
    counts = np.diff(IT_TEMPLATE_OFFSET)
    host_kind = rng.choice(3, size=n, p=(0.45, 0.3, 0.25))
    host_kind[category == INCIDENT_CATEGORIES.index("lost device")] = 1  # only laptops get lost
    template = IT_TEMPLATE_OFFSET[category] + (rng.random(n) * counts[category]).astype(np.int64)
    gender = rng.choice(3, size=n, p=GENDER_P)
    ext_first, ext_last = draw_names(rng, vocab, gender)
    return ItPlan(
        day=YEAR_2025 + rng.integers(0, DAYS_2025, n),
        minute=rng.choice(24, size=n, p=normalised(HOUR_WEIGHTS)) * 60 + rng.integers(0, 60, n),
        reporter=reporter,
        other=other,
        host_kind=host_kind,
        host_number=rng.integers(0, 100_000, n),
        host_role=rng.integers(0, len(SERVER_ROLES), n),
        host_fqdn=rng.random(n) < 0.5,
        ip=random_ipv4(rng, n, private_share=0.7),
        external_ip=random_ipv4(rng, n, private_share=0.0),
        category=category,
        severity=severity,
        template=template,
        external=draw_email_plan(rng, ext_first, ext_last, EXTERNAL_DOMAIN_P),
        phone=random_phone_numbers(rng, n),
        phone_fmt=phone_formats(rng, n),
    )


def short_hosts(kind: np.ndarray, number: np.ndarray, role: np.ndarray) -> np.ndarray:
    """Host names like wks-04821, lap-00317 or srv-db-017."""
    out = np.empty(len(kind), dtype=object)
    for code, prefix in enumerate(("wks-", "lap-")):
        mask = kind == code
        out[mask] = digit_pattern(prefix + "{n:5}", n=number[mask])
    servers = kind == 2
    out[servers] = "srv-" + SERVER_ROLES[role[servers]] + digit_pattern("-{n:3}", n=number[servers] % 1000)
    return out


def it_chunk(ctx: Context, plan: ItPlan, start: int, stop: int) -> Chunk:
    """Security incident rows [start, stop)."""
    emp, vocab = ctx.employees, ctx.vocab
    sl = slice(start, stop)
    reporter, other = plan.reporter[sl], plan.other[sl]
    short = short_hosts(plan.host_kind[sl], plan.host_number[sl], plan.host_role[sl])
    fqdn = plan.host_fqdn[sl] & (plan.host_kind[sl] != 2)  # workstations are logged with their FQDN
    ips = format_ips(plan.ip[sl])
    ext = plan.external
    columns = {
        "incident_id": id_strings("INC-", np.arange(start + 1, stop + 1), 6),
        "reported_at": minute_timestamps(plan.day[sl], plan.minute[sl]),
        "reporter_email": emp.emails(vocab, reporter),
        "host": np.where(fqdn, short + "." + HOST_DOMAIN, short),
        "ip_address": ips,
        "category": CATEGORY_NAMES[plan.category[sl]],
        "severity": SEVERITIES[plan.severity[sl]],
    }
    slots: dict[str, SlotFn] = {
        "reporter_name": lambda r: emp.names(vocab, reporter[r]),
        "reporter_email": lambda r: columns["reporter_email"][r],
        "other_name": lambda r: emp.names(vocab, other[r]),
        "other_email": lambda r: emp.emails(vocab, other[r]),
        "external_email": lambda r: personal_emails(
            vocab,
            EXTERNAL_DOMAINS,
            ext.first[sl][r],
            ext.last[sl][r],
            ext.pattern[sl][r],
            ext.number[sl][r],
            ext.domain[sl][r],
        ),
        "phone": lambda r: format_phones(plan.phone[sl][r], plan.phone_fmt[sl][r]),
        "host": lambda r: short[r],
        "ip": lambda r: ips[r],
        "external_ip": lambda r: format_ips(plan.external_ip[sl][r]),
    }
    rendered = render_texts(IT_TEMPLATE_LIST, plan.template[sl], slots)
    return with_text(SPECS["it"], columns, rendered)


@dataclass(frozen=True)
class SupportPlan:
    """Random draws behind the support tickets and the customers who open them."""

    customer: np.ndarray  # per ticket: who opened it
    first: np.ndarray  # per customer from here on
    last: np.ndarray
    emails: np.ndarray  # unique per customer
    phone: np.ndarray
    phone_fmt: np.ndarray
    zip: np.ndarray
    day: np.ndarray  # per ticket from here on
    second: np.ndarray
    product: np.ndarray
    satisfaction: np.ndarray
    template: np.ndarray
    body_phone_fmt: np.ndarray
    order: np.ndarray
    house: np.ndarray
    street: np.ndarray
    city: np.ndarray


def plan_support(rng: np.random.Generator, vocab: Vocabulary, emp: Employees, n: int) -> SupportPlan:
    """Tickets from a customer base where ~10% of customers are employees using a personal email."""
    customers = max(1, round(0.8 * n))  # some customers open several tickets
    gender = rng.choice(3, size=customers, p=GENDER_P)
    first, last = draw_names(rng, vocab, gender)
    phone = random_phone_numbers(rng, customers)
    zip_idx = rng.choice(len(vocab.zips), size=customers, p=vocab.zip_p)
    staff = min(round(0.1 * customers), emp.size)
    seats = rng.choice(customers, size=staff, replace=False)
    who = rng.choice(emp.size, size=staff, replace=False)
    first[seats], last[seats] = emp.first[who], emp.last[who]  # same person: same name, phone and zip
    phone[seats], zip_idx[seats] = emp.phone[who], emp.zip[who]
    seconds = rng.choice(24, size=n, p=normalised(HOUR_WEIGHTS)) * 3600 + rng.integers(0, 3600, n)
    return SupportPlan(
        customer=rng.integers(0, customers, n),
        first=first,
        last=last,
        emails=unique_personal_emails(vocab, PERSONAL_DOMAINS, draw_email_plan(rng, first, last, PERSONAL_DOMAIN_P)),
        phone=phone,
        phone_fmt=phone_formats(rng, customers),
        zip=zip_idx,
        day=YEAR_2025 + rng.integers(0, DAYS_2025, n),
        second=seconds,
        product=rng.choice(len(PRODUCTS), size=n, p=PRODUCT_P),
        satisfaction=rng.choice(len(SATISFACTION), size=n, p=SATISFACTION_P),
        template=rng.choice(len(TICKET_TEMPLATES), size=n, p=normalised([w for _, w in TICKET_TEMPLATES])),
        body_phone_fmt=phone_formats(rng, n),
        order=rng.integers(10_000_000, 100_000_000, n),
        house=(rng.pareto(1.2, n) * 40).astype(np.int64) % 9999 + 1,
        street=rng.integers(0, len(vocab.streets), n),
        city=rng.choice(len(vocab.cities), size=n, p=vocab.city_p),
    )


def support_chunk(ctx: Context, plan: SupportPlan, start: int, stop: int) -> Chunk:
    """Support ticket rows [start, stop)."""
    vocab = ctx.vocab
    sl = slice(start, stop)
    c = plan.customer[sl]
    names = full_names(vocab, plan.first[c], plan.last[c])
    emails = plan.emails[c]
    products = PRODUCTS[plan.product[sl]]
    columns = {
        "ticket_id": id_strings("TCK-", np.arange(start + 1, stop + 1), 7),
        "customer_name": names,
        "customer_email": emails,
        "customer_phone": format_phones(plan.phone[c], plan.phone_fmt[c]),
        "postcode": vocab.zips[plan.zip[c]],
        "opened_at": minute_timestamps(plan.day[sl], np.zeros(stop - start, np.int64), plan.second[sl]),
        "product": products,
        "satisfaction": SATISFACTION[plan.satisfaction[sl]],
    }
    slots: dict[str, SlotFn] = {
        "name": lambda r: names[r],
        "email": lambda r: emails[r],
        "phone": lambda r: format_phones(plan.phone[c[r]], plan.body_phone_fmt[sl][r]),
        "order": lambda r: digit_pattern("ORD-{n:8}", n=plan.order[sl][r]),
        "address": lambda r: (
            int_strings(plan.house[sl][r])
            + " "
            + vocab.streets[plan.street[sl][r]]
            + ", "
            + vocab.cities[plan.city[sl][r]]
        ),
        "product": lambda r: products[r],
    }
    rendered = render_texts([t for t, _ in TICKET_TEMPLATES], plan.template[sl], slots)
    return with_text(SPECS["support"], columns, rendered)


ChunkFn = Callable[[int, int], Chunk]


def chunk_builder(department: str, ctx: Context, seed: int, rows: int) -> ChunkFn:
    """Draw a department's plan up front and return its chunk materialiser."""
    emp, vocab = ctx.employees, ctx.vocab
    n = dataset_rows(department, rows)
    rng = stream(seed, department)
    if department == "hr":
        return lambda a, b: hr_chunk(ctx, a, b)
    if department == "finance":
        finance = plan_finance(rng, vocab, emp.size, n)
        return lambda a, b: finance_chunk(ctx, finance, a, b)
    if department == "it":
        it = plan_it(rng, vocab, emp.size, n)
        return lambda a, b: it_chunk(ctx, it, a, b)
    support = plan_support(rng, vocab, emp, n)
    return lambda a, b: support_chunk(ctx, support, a, b)


# ---------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class WrittenFile:
    """A file the generator wrote and how many records (data rows / JSON lines) it holds."""

    name: str
    path: Path
    rows: int


def csv_header(fields: Sequence[str]) -> bytes:
    """One CSV record written by the standard library (used for headers and constant prefixes)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue().encode("utf-8")


def csv_fields(values: pa.Array) -> pa.Array:
    """Quote like csv.QUOTE_MINIMAL: only fields holding a comma, quote or line break, doubling quotes."""
    needs_quotes = pc.match_substring_regex(values, r'[,"\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs_quotes, quoted, values)


def string_bytes(values: pa.Array) -> memoryview:
    """The concatenated UTF-8 payload of a string array, without copying it through Python objects."""
    if len(values) == 0:
        return memoryview(b"")
    _, offsets, data = values.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    return memoryview(data)[bounds[0] : bounds[-1]]


def csv_records(columns: Sequence[pa.Array], prefix: str = "") -> memoryview:
    """CSV lines for equal-length string columns, after an optional constant prefix."""
    # Arrow kernels instead of csv.writer: the csv module's ~2.5 us per row dominated million-row runs.
    lines = pc.binary_join_element_wise(*map(csv_fields, columns), ",")
    return string_bytes(pc.binary_join_element_wise(prefix, lines, "\n", ""))


PiiValues = dict[tuple[str, str], list[pa.Array]]  # (column, entity type) -> distinct values per chunk


def write_dataset(
    spec: DatasetSpec, n_rows: int, make_chunk: ChunkFn, out_dir: Path, spans_out: IO[bytes]
) -> tuple[int, PiiValues]:
    """Stream a dataset to CSV chunk by chunk; return the span line count and the PII values seen."""
    path = spec.path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    collected: PiiValues = {}
    prefix = f'{{"dataset": {json.dumps(spec.name)}, "column": {json.dumps(spec.text_column)}, "row": '
    span_lines = 0
    with path.open("wb") as handle:
        handle.write(csv_header(spec.columns))
        for start in range(0, n_rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n_rows)
            chunk = make_chunk(start, stop)
            arrays = {c: pa.array(chunk.columns[c], type=pa.string()) for c in spec.columns}
            handle.write(csv_records([arrays[c] for c in spec.columns]))
            if chunk.spans is not None:
                rows = np.flatnonzero(chunk.spans != None)  # noqa: E711 - elementwise on object array
                if rows.size:
                    lines = prefix + int_strings(rows + start) + ', "spans": ' + chunk.spans[rows] + "}\n"
                    spans_out.write("".join(lines.tolist()).encode("utf-8"))
                    span_lines += rows.size
            found = [(c, e, arrays[c]) for c, e in spec.identifiers.items()]
            found += [(c, e, pa.array(v, type=pa.string())) for c, e, v in chunk.pii]
            for column, entity, values in found:
                collected.setdefault((column, entity), []).append(pc.unique(values))
    return span_lines, collected


def pii_groups(spec: DatasetSpec, collected: PiiValues) -> list[tuple[str, str, pa.Array]]:
    """Distinct values per column, sorted so chunking cannot reorder them; the first type in ENTITY_ORDER wins."""
    out: list[tuple[str, str, pa.Array]] = []
    for column in spec.columns:
        keys = sorted((k for k in collected if k[0] == column), key=lambda k: ENTITY_ORDER.index(k[1]))
        seen = pa.array([], type=pa.string())
        for key in keys:
            values = pc.unique(pa.concat_arrays(collected[key]))
            values = values.take(pc.array_sort_indices(values))
            values = values.filter(pc.invert(pc.is_in(values, value_set=seen)))
            seen = pa.concat_arrays([seen, values])
            out.append((column, key[1], values))
    return out


def select_departments(departments: Iterable[str] | None) -> tuple[str, ...]:
    """Validated departments in canonical order (order matters for the ground-truth files)."""
    if departments is None:
        return DEPARTMENTS
    if isinstance(departments, str):  # "hr,it" would otherwise iterate character by character
        departments = departments.split(",")
    wanted = {d.strip().lower() for d in departments if d.strip()}
    unknown = sorted(wanted - set(DEPARTMENTS))
    if unknown:
        raise ValueError(f"unknown department(s) {', '.join(unknown)}; choose from {', '.join(DEPARTMENTS)}")
    if not wanted:
        raise ValueError("no departments selected")
    return tuple(d for d in DEPARTMENTS if d in wanted)


def check_arguments(rows: int, seed: int) -> None:
    """Reject row counts and seeds the generator cannot honour."""
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be an integer between 1 and {MAX_ROWS:,}, got {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def generate_files(out_dir: Path, rows: int, seed: int, departments: Iterable[str] | None = None) -> list[WrittenFile]:
    """Write the selected departments' CSVs plus ground truth; list every file with its record count."""
    check_arguments(rows, seed)
    selected = select_departments(departments)
    out_dir = Path(out_dir)
    vocab = build_vocabulary(seed)
    ctx = Context(vocab, build_employees(stream(seed, "employees"), vocab, rows))
    truth_dir = out_dir / GROUND_TRUTH_DIR
    truth_dir.mkdir(parents=True, exist_ok=True)
    written: list[WrittenFile] = []
    pii_count = span_count = 0
    with (truth_dir / PII_VALUES_FILE).open("wb") as pii_out, (truth_dir / TEXT_SPANS_FILE).open("wb") as spans_out:
        pii_out.write(csv_header(("dataset", "column", "entity_type", "value")))
        for department in selected:
            spec = SPECS[department]
            n = dataset_rows(department, rows)
            lines, collected = write_dataset(spec, n, chunk_builder(department, ctx, seed, rows), out_dir, spans_out)
            span_count += lines
            for column, entity, values in pii_groups(spec, collected):
                prefix = csv_header((spec.name, column, entity, "")).decode("utf-8").rstrip("\n")
                pii_out.write(csv_records([values], prefix))
                pii_count += len(values)
            written.append(WrittenFile(spec.name, spec.path(out_dir), n))
    written.append(WrittenFile("pii_values", truth_dir / PII_VALUES_FILE, pii_count))
    written.append(WrittenFile("text_spans", truth_dir / TEXT_SPANS_FILE, span_count))
    return written


def generate(out_dir: Path, rows: int, seed: int, departments: Iterable[str] | None = None) -> dict[str, Path]:
    """Write seeded demo landing data under out_dir; return dataset name -> CSV path."""
    dataset_names = {spec.name for spec in SPECS.values()}
    return {f.name: f.path for f in generate_files(out_dir, rows, seed, departments) if f.name in dataset_names}
