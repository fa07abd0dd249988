"""A bad-file corpus at the ingest level, built from a clean generated HR file, on a real DuckDB.

Every odd export that is still the same data gives exactly the clean file's typed table; every bad one
is rejected with an IngestError whose problem code and message say what is wrong, and no cell value.
"""

import bz2
import csv
import gzip
import io
import lzma
import random
import zipfile
from pathlib import Path

import duckdb
import pytest

from demo.generator import generate
from pipelines.contracts import Contract, load_contracts
from pipelines.ingest import IngestError, drop_staged, ingest_file, publish_staged, quote_ident

CONTRACTS = {c.dataset: c for c in load_contracts()}
HR = CONTRACTS["hr_employees"]
NAME = "employees_2026-01-31.csv"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("corpus"), rows=300, seed=5, departments=["hr", "support"])


@pytest.fixture(scope="module")
def clean(generated) -> bytes:
    return generated["hr_employees"].read_bytes()


@pytest.fixture(scope="module")
def rows(clean) -> list[list[str]]:
    return list(csv.reader(io.StringIO(clean.decode("utf-8"))))


@pytest.fixture(scope="module")
def values(rows) -> set[str]:
    """Cell values long and distinctive enough that finding one in a message means it leaked."""
    return {cell for row in rows[1:] for cell in row if len(cell) >= 5 and not cell.isdigit()}


@pytest.fixture(scope="module")
def clean_table(clean, tmp_path_factory) -> tuple[list, list]:
    return table_of(write(tmp_path_factory.mktemp("clean"), clean))


def write(folder: Path, content: bytes, name: str = NAME) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def to_csv(rows: list[list[str]], newline: str = "\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator=newline).writerows(rows)
    return out.getvalue().encode("utf-8")


def table_of(path: Path, contract: Contract = HR, table: str = "hr_employees") -> tuple[list, list]:
    """(column names and types, rows in order) of the ingested table."""
    with duckdb.connect() as con:
        ingest_file(path, contract, con, table)
        types = con.execute(f"DESCRIBE {quote_ident(table)}").fetchall()
        return [t[:2] for t in types], con.execute(f"SELECT * FROM {quote_ident(table)}").fetchall()


def rejected(path: Path, values: set[str], problem: str, contract: Contract = HR) -> str:
    """Ingest must fail with `problem`; returns the message after checking it shows no cell value."""
    with duckdb.connect() as con:
        with pytest.raises(IngestError) as err:
            ingest_file(path, contract, con, "hr_employees")
        assert (
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0
        )  # nothing half-done, temp included
    message = str(err.value)
    assert err.value.problem == problem, message
    assert path.name in message
    leaked = [v for v in values if v in message]
    assert not leaked, f"cell values in the message: {len(leaked)}"
    return message


def with_source(contract: Contract, **changes) -> Contract:
    """The contract with source fields changed, validated as a loaded contract would be."""
    data = contract.model_dump(mode="json")
    data["source"].update(changes)
    return Contract.model_validate(data)


# --- the same data, exported differently: exactly the clean table ------------------------------------


def test_bom_and_crlf_give_the_clean_table(tmp_path, clean, clean_table):
    odd = b"\xef\xbb\xbf" + clean.replace(b"\n", b"\r\n")
    assert table_of(write(tmp_path, odd)) == clean_table


def test_reordered_columns_give_the_clean_table(tmp_path, rows, clean_table):
    order = list(reversed(range(len(rows[0]))))
    order[0], order[5] = order[5], order[0]
    shuffled = [[row[i] for i in order] for row in rows]
    assert table_of(write(tmp_path, to_csv(shuffled))) == clean_table


def test_reordered_bom_crlf_export_gives_the_clean_table(tmp_path, rows, clean_table):
    shuffled = [row[6:] + row[:6] for row in rows]
    assert table_of(write(tmp_path, b"\xef\xbb\xbf" + to_csv(shuffled, "\r\n"))) == clean_table


def test_renamed_ignored_and_repeated_headers_through_the_contract(tmp_path, rows, clean_table):
    """A real export: 'Employee ID', an extra column, salary twice (the 2nd is last year's)."""
    header = ["Employee ID"] + rows[0][1:] + ["internal_note", "salary"]
    export = [header] + [row + ["note", str(int(row[10]) - 1000)] for row in rows[1:]]
    contract = with_source(
        HR, rename={"Employee ID": "employee_id", "salary#1": "salary"}, ignore_columns=["internal_note", "salary#2"]
    )
    assert table_of(write(tmp_path, to_csv(export)), contract) == clean_table


def test_ignored_occurrence_leaves_the_other_by_name(tmp_path, rows, clean_table):
    export = [row[:11] + [row[10] if i == 0 else row[10] + "0", row[11]] for i, row in enumerate(rows)]
    contract = with_source(HR, ignore_columns=["salary#2"])
    assert table_of(write(tmp_path, to_csv(export)), contract) == clean_table


def test_repeated_header_renamed_as_a_whole_is_ambiguous(tmp_path, rows, values):
    export = [row + [row[10]] for row in rows]
    contract = with_source(HR, rename={"salary": "salary"})
    message = rejected(write(tmp_path, to_csv(export)), values, "duplicate_column", contract)
    assert "'salary#1'" in message and "more than once" in message


def test_two_sources_for_one_column(tmp_path, rows, values):
    export = [row + [row[0]] for row in rows]
    export[0][-1] = "Employee ID"
    contract = with_source(HR, rename={"Employee ID": "employee_id"})
    message = rejected(write(tmp_path, to_csv(export)), values, "duplicate_column", contract)
    assert "'employee_id'" in message and "'Employee ID'" in message and "one source" in message


def test_control_characters_allowed_in_free_text(tmp_path, generated):
    support = CONTRACTS["support_tickets"]
    lines = list(csv.reader(io.StringIO(generated["support_tickets"].read_text(encoding="utf-8"))))
    body = lines[0].index("body")
    lines[3][body] = lines[3][body] + "\x0c\x07"
    _, table = table_of(write(tmp_path, to_csv(lines), "tickets_x.csv"), support, "support_tickets")
    assert any("\x07" in str(r[body]) for r in table)


# --- rejected: code, line, column, no value ----------------------------------------------------------


def test_nul_bytes_rejected_with_line_and_column(tmp_path, rows, values):
    bad = [list(r) for r in rows]
    for i in (5, 9, 12):
        bad[i][0] = bad[i][0][:3] + "\x00" + bad[i][0][3:]
    message = rejected(write(tmp_path, to_csv(bad)), values, "nul_byte")
    assert "NUL bytes in 3 cell(s)" in message and "line 6" in message and "'employee_id'" in message


def test_nul_byte_in_an_ignored_column_still_rejected(tmp_path, rows, values):
    bad = [row + ["x"] for row in rows]
    bad[0][-1], bad[4][-1] = "note", "a\x00b"
    contract = with_source(HR, ignore_columns=["note"])
    assert "line 5" in rejected(write(tmp_path, to_csv(bad)), values, "nul_byte", contract)


def test_control_character_outside_free_text_rejected(tmp_path, rows, values):
    bad = [list(r) for r in rows]
    bad[3][9] = bad[3][9] + "\x07"  # org_unit
    message = rejected(write(tmp_path, to_csv(bad)), values, "control_character")
    assert "line 4" in message and "'org_unit'" in message and "1 cell(s)" in message


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _parquet(tmp_path: Path) -> bytes:
    target = tmp_path / "x.parquet"
    duckdb.sql(f"COPY (SELECT 1 AS a) TO '{target}' (FORMAT parquet)")
    return target.read_bytes()


@pytest.mark.parametrize(
    "pack, problem, says",
    [
        (gzip.compress, "compressed", "is a gzip-compressed file, not a CSV; decompress it before landing"),
        (bz2.compress, "compressed", "is a bzip2-compressed file, not a CSV"),
        (lambda b: lzma.compress(b, format=lzma.FORMAT_XZ), "compressed", "is an xz-compressed file, not a CSV"),
        (lambda b: b"\x28\xb5\x2f\xfd" + b[:200], "compressed", "is a zstd-compressed file"),
        (lambda b: b"7z\xbc\xaf\x27\x1c" + b[:200], "compressed", "is a 7z archive"),
        (lambda b: _zip({NAME: b}), "compressed", "is a zip archive, not a CSV"),
        (
            lambda b: _zip({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<x/>"}),
            "compressed",
            "is an Excel workbook (xlsx)",
        ),
        (lambda b: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b[:200], "binary", "OLE2 document"),
        (lambda b: b.decode().encode("utf-16"), "encoding", "UTF-16 text"),
        (lambda b: random.Random(0).randbytes(5000), "binary", "has binary content"),
    ],
)
def test_compressed_and_binary_files_say_what_they_are(tmp_path, clean, values, pack, problem, says):
    assert says in rejected(write(tmp_path, pack(clean)), values, problem)


def test_parquet_file_says_so(tmp_path, values):
    assert "is a Parquet file, not a CSV" in rejected(write(tmp_path, _parquet(tmp_path)), values, "binary")


def test_truncated_mid_row(tmp_path, clean, values):
    cut = clean[: clean.index(b"\n", len(clean) // 2) - 12]
    message = rejected(write(tmp_path, cut), values, "malformed_csv")
    assert "not a well-formed CSV at line" in message and "Expected Number of Columns" in message


def test_truncated_mid_quote(tmp_path, rows, values):
    quoted = to_csv(rows[:40] + [rows[40][:8] + ["Head of, Sales"] + rows[40][9:]])
    cut = quoted[: quoted.rindex(b'"Head of, Sales"') + 8]
    message = rejected(write(tmp_path, cut), values, "malformed_csv")
    assert "line 41" in message and ("unterminated quote" in message or "Expected Number of Columns" in message)


@pytest.mark.parametrize(
    "content, says",
    [(b"", "is empty (0 bytes)"), (b"\n\n", "no header row"), (b"\xef\xbb\xbf\r\n", "no header row")],
)
def test_empty_files(tmp_path, values, content, says):
    assert says in rejected(write(tmp_path, content), values, "empty")


@pytest.mark.parametrize("newline", ["\n", "\r\n", ""])
def test_header_only(tmp_path, rows, values, newline):
    content = ",".join(rows[0]) + newline
    assert "has a header but no data rows" in rejected(write(tmp_path, content.encode()), values, "empty")


def test_missing_column(tmp_path, rows, values):
    message = rejected(write(tmp_path, to_csv([r[:-1] for r in rows])), values, "schema_drift")
    assert "missing column(s) 'hire_date'" in message


def test_missing_renamed_column_names_its_header(tmp_path, rows, values):
    contract = with_source(HR, rename={"Employee ID": "employee_id"})
    message = rejected(write(tmp_path, to_csv([r[1:] for r in rows])), values, "schema_drift", contract)
    assert "missing column(s) 'employee_id' (from header 'Employee ID')" in message


def test_extra_column(tmp_path, rows, values):
    export = [rows[0] + ["bonus"]] + [r + ["1000"] for r in rows[1:]]
    assert "undeclared column(s) 'bonus'" in rejected(write(tmp_path, to_csv(export)), values, "schema_drift")


def test_duplicated_column(tmp_path, rows, values):
    export = [r + [r[10]] for r in rows]
    message = rejected(write(tmp_path, to_csv(export)), values, "duplicate_column")
    assert "duplicated column 'salary' (2 times)" in message and "'salary#2'" in message


def test_huge_cell_names_the_contract_limit(tmp_path, rows, values):
    bad = [list(r) for r in rows]
    bad[4][8] = "x" * 200_000  # job_title
    message = rejected(write(tmp_path, to_csv(bad)), values, "cell_too_large")
    assert "a cell in column 'job_title' at line 5 is longer than the contract's limit of 65536 bytes" in message


def test_cell_beyond_duckdb_line_size_is_still_a_cell_limit(tmp_path, rows, values):
    """Longer than any line DuckDB reads: still reported against the cell limit, not as a delimiter problem."""
    bad = [list(r) for r in rows]
    bad[7][9] = "y" * 3_000_000  # org_unit
    message = rejected(write(tmp_path, to_csv(bad)), values, "cell_too_large")
    assert "a cell in column 'org_unit' at line 8 is longer than the contract's limit of 65536 bytes" in message


def test_type_drift_still_counted(tmp_path, rows, values):
    bad = [list(r) for r in rows]
    bad[3][10] = bad[9][10] = "eighty thousand"
    assert "'salary' expects integer: 2 value(s) do not convert" in rejected(
        write(tmp_path, to_csv(bad)), values, "type_drift"
    )


# --- staging -------------------------------------------------------------------------------------------


def test_ingest_into_a_staged_table_then_publish(tmp_path, clean, rows):
    path = write(tmp_path, clean)
    with duckdb.connect(str(tmp_path / "raw.duckdb")) as con:
        con.execute("CREATE TABLE hr_employees AS SELECT 'old' AS batch")
        report = ingest_file(path, HR, con, "_staged_hr_employees")
        assert report.rows == len(rows) - 1
        assert con.execute("SELECT * FROM hr_employees").fetchall() == [("old",)]  # not touched until published
        publish_staged(con, "_staged_hr_employees", "hr_employees")
        assert con.execute("SELECT count(*) FROM hr_employees").fetchone()[0] == len(rows) - 1
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert tables == {"hr_employees"}


def test_publish_without_a_staged_table_keeps_the_table(tmp_path):
    with duckdb.connect() as con:
        con.execute("CREATE TABLE hr_employees AS SELECT 1 AS x")
        with pytest.raises(duckdb.Error):
            publish_staged(con, "_staged_hr_employees", "hr_employees")
        assert con.execute("SELECT * FROM hr_employees").fetchall() == [(1,)]


def test_drop_staged(tmp_path, clean):
    with duckdb.connect() as con:
        ingest_file(write(tmp_path, clean), HR, con, "_staged_hr_employees")
        drop_staged(con, "_staged_hr_employees")
        drop_staged(con, "_staged_hr_employees")  # nothing there: no error
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0


@pytest.mark.parametrize("table", ["landed", "__ingest_landed", 'odd "name"'])
def test_any_table_name(tmp_path, clean, clean_table, table):
    assert table_of(write(tmp_path, clean), HR, table)[1] == clean_table[1]
