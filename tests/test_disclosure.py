"""The SQL risk module against pandas/numpy references: class sizes, k, l, prosecutor risk, weights, NULLs, quoting."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipelines.privacy import disclosure
from pipelines.privacy.disclosure import (
    CLASS_SIZE,
    DISTINCT_PREFIX,
    RECORD_RISK,
    SQL,
    class_sizes,
    frame_class_sizes,
    k_anonymous_query,
    records_below_k,
    risk_features_query,
)
from pipelines.privacy.risk import risk_report

# Names a naive f-string would break: a space, a double quote, a keyword, a semicolon.
ODD = ["zip code", 'say "hi"', "select", "a;b"]


def generated(seed: int, rows: int = 2_000, null_share: float = 0.1) -> pd.DataFrame:
    """Skewed quasi-identifiers with NULLs in each, a sensitive column with NULLs, and a positive weight."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            ODD[0]: rng.choice(["A", "B", "C", "D"], rows, p=[0.6, 0.25, 0.1, 0.05]),
            ODD[1]: rng.integers(0, 6, rows).astype(float),
            ODD[2]: rng.choice(["f", "m", "x"], rows, p=[0.49, 0.49, 0.02]),
            ODD[3]: rng.choice(["flu", "cold", "none", "x"], rows),
            "w": rng.integers(1, 9, rows),
        }
    )
    for column in ODD:
        frame.loc[rng.random(rows) < null_share, column] = None
    return frame


def reference(frame: pd.DataFrame, qis: list[str], sensitive: list[str], weight: str | None, k: int) -> dict:
    """The figures by pandas groupby (NULLs kept as a value), independently of the module."""
    groups = frame.groupby(qis, dropna=False, sort=False)
    sizes = groups[weight].sum() if weight else groups.size()
    records = int(sizes.sum())
    return {
        "records": records,
        "equivalence_classes": len(sizes),
        "k": int(sizes.min()),
        "prosecutor_risk_highest": 1 / int(sizes.min()),
        "prosecutor_risk_average": len(sizes) / records,
        "sample_uniqueness": int(sizes[sizes == 1].sum()) / records,
        "records_at_risk_share": int(sizes[(1.0 / sizes) > 0.2].sum()) / records,
        "classes_below_k": int((sizes < k).sum()),
        "records_below_k": int(sizes[sizes < k].sum()),
        "l_diversity": {s: int(groups[s].agg(lambda v: v.nunique(dropna=False)).min()) for s in sensitive},
    }


@pytest.fixture
def con():
    with duckdb.connect() as connection:
        yield connection


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weight", [None, "w"])
@pytest.mark.parametrize("qis", [ODD[:1], ODD[:2], ODD[:3]])
def test_class_sizes_match_pandas_with_nulls_weights_and_odd_names(con, seed, weight, qis):
    frame = generated(seed)
    con.register("t t", frame)
    report = class_sizes(con, "t t", qis, sensitive=[ODD[3]], weight=weight, k=5)
    expected = reference(frame, qis, [ODD[3]], weight, 5)
    for name, value in expected.items():
        actual = getattr(report, name)
        assert actual == (pytest.approx(value, abs=1e-15) if isinstance(value, float) else value), name


@pytest.mark.parametrize("seed", [0, 3])
def test_unweighted_figures_equal_the_numpy_risk_report(seed):
    frame = generated(seed, rows=5_000)
    qis = ODD[:3]
    assert frame_class_sizes(frame, qis, sensitive=[ODD[3]], k=3, risk_threshold=0.1) == risk_report(
        frame, qis, [ODD[3]], risk_threshold=0.1, k=3
    )


def test_per_record_features_match_pandas_transform(con):
    frame = generated(4).reset_index(names="row")
    con.register("t", frame)
    qis = ODD[:2]
    sql = risk_features_query("t", qis, [ODD[3]], columns=["row"])
    features = con.execute(sql).df().sort_values("row").reset_index(drop=True)
    groups = frame.groupby(qis, dropna=False, sort=False)
    size = groups[qis[0]].transform("size")
    assert list(features.columns) == ["row", CLASS_SIZE, RECORD_RISK, DISTINCT_PREFIX + ODD[3]]
    assert features[CLASS_SIZE].tolist() == size.tolist()
    assert np.allclose(features[RECORD_RISK], 1.0 / size)
    distinct = groups[ODD[3]].transform(lambda v: v.nunique(dropna=False))
    assert features[DISTINCT_PREFIX + ODD[3]].tolist() == distinct.tolist()
    weighted = con.execute(risk_features_query("t", qis, weight="w", columns=["row"])).df().sort_values("row")
    assert weighted[CLASS_SIZE].tolist() == groups["w"].transform("sum").tolist()


def test_a_single_class(con):
    con.execute("CREATE TABLE one AS SELECT 'A' AS zip, i % 3 AS dx FROM range(7) r(i)")
    report = class_sizes(con, "one", ["zip"], sensitive=["dx"], k=10)
    assert (report.equivalence_classes, report.k, report.l_diversity) == (1, 7, {"dx": 3})
    assert report.prosecutor_risk_highest == report.prosecutor_risk_average == 1 / 7
    assert (report.classes_below_k, report.records_below_k) == (1, 7)
    whole = class_sizes(con, "one", [])  # no quasi-identifiers: the table is one class
    assert (whole.equivalence_classes, whole.k) == (1, 7)


def test_an_all_null_quasi_identifier_is_one_class(con):
    con.execute("CREATE TABLE n AS SELECT CAST(NULL AS VARCHAR) AS zip, i AS x FROM range(4) r(i)")
    assert class_sizes(con, "n", ["zip"]).k == 4


@pytest.mark.parametrize("qis", [["zip"], []])
def test_an_empty_table_is_a_clear_error(con, qis):
    con.execute("CREATE TABLE empty (zip VARCHAR, w INTEGER)")
    with pytest.raises(ValueError, match="is empty: risk needs at least one record"):
        class_sizes(con, "empty", qis)
    with pytest.raises(ValueError, match="is empty"):
        class_sizes(con, "empty", qis, weight="w")


def test_arguments_are_checked_by_name_without_values(con):
    con.execute("CREATE TABLE t AS SELECT 'SECRET' AS zip, 0 AS w, 'x' AS dx")
    with pytest.raises(ValueError, match="quasi-identifier column 'postcode' is not in the table"):
        class_sizes(con, "t", ["postcode"])
    with pytest.raises(ValueError, match="sensitive column 'diagnosis'"):
        class_sizes(con, "t", ["zip"], sensitive=["diagnosis"])
    with pytest.raises(ValueError, match="both quasi-identifier and sensitive"):
        class_sizes(con, "t", ["zip"], sensitive=["zip"])
    with pytest.raises(ValueError, match="weight column 'w' has 1 row") as err:
        class_sizes(con, "t", ["zip"], weight="w")
    assert "SECRET" not in str(err.value)


def test_a_table_name_is_quoted_and_sql_is_taken_as_given(con):
    con.execute('CREATE SCHEMA "my schema"')
    con.execute('CREATE TABLE "my schema"."t""x" AS SELECT i % 2 AS g FROM range(6) r(i)')
    assert class_sizes(con, disclosure.table('t"x', "my schema"), ["g"]).k == 3
    assert class_sizes(con, SQL('(SELECT g FROM "my schema"."t""x" WHERE g = 0)'), ["g"]).records == 3
    with pytest.raises(duckdb.CatalogException):
        class_sizes(con, "t; DROP TABLE x", ["g"])  # a plain string is one (quoted) name, never SQL


def test_k_anonymous_selection_and_records_below_k(con):
    frame = generated(5, rows=500)
    con.register("t", frame.reset_index(names="row"))
    qis = ODD[:3]
    sizes = frame.groupby(qis, dropna=False)[qis[0]].transform("size")
    assert records_below_k(con, "t", qis, 4) == int((sizes < 4).sum())
    kept = con.execute(k_anonymous_query("t", qis, 4, exclude=["w"], order_by="row")).df()
    assert kept["row"].tolist() == frame.index[sizes >= 4].tolist()
    assert "w" not in kept.columns and "__class_size" not in kept.columns
    assert class_sizes(con, SQL(f"({k_anonymous_query('t', qis, 4)})"), qis).k >= 4


def test_the_connection_is_free_after_every_call(con):
    """DuckDB refuses new work while a result is unfetched; the module must leave none behind."""
    con.execute("CREATE TABLE t AS SELECT i % 3 AS g, 1 AS w FROM range(9) r(i)")
    class_sizes(con, "t", ["g"], weight="w", k=2)
    records_below_k(con, "t", ["g"], 2)
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(9,)]
