"""Tests for re-identification risk, hierarchies and the optimal generalization search."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.privacy.hierarchies import (
    Hierarchy,
    age_bands,
    date_hierarchy,
    load_arx_hierarchies,
    load_hierarchy,
    numeric_buckets,
    postcode_hierarchy,
)
from pipelines.privacy.risk import (
    LOSS_MEASURE,
    SUPPRESSED_COLUMN,
    NoGeneralizationError,
    apply_generalization,
    find_minimal_generalization,
    generalization_loss,
    risk_report,
)

ARX_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "arx"
ADULT_COLUMNS = [
    "sex",
    "age",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
    "salary-class",
]


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    """ARX's adult.csv, read as strings exactly as ARX sees it."""
    path = ARX_DIR / "adult.csv"
    if not path.exists():
        pytest.skip(f"ARX reference data not found at {ARX_DIR} (see /work/shared/data/README.md)")
    return pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def adult_hierarchies(adult: pd.DataFrame) -> dict[str, Hierarchy]:
    """ARX's adult hierarchies keyed by column."""
    return load_arx_hierarchies(ARX_DIR, "adult")


# ---------------------------------------------------------------------------------------
# risk_report on small hand-computed tables

SKEWED = pd.DataFrame(
    {
        "zip": ["A", "A", "A", "B", "B", "C"],
        "age": [1, 1, 1, 2, 2, 3],
        "dx": ["flu", "flu", "cold", "flu", "flu", "x"],
    }
)
WITH_NULLS = pd.DataFrame(
    {
        "zip": ["A", "A", "A", "B"],
        "age": [None, None, 1.0, None],
        "dx": ["a", "b", "c", "d"],
    }
)
TWO_PAIRS = pd.DataFrame(
    {
        "zip": ["A", "A", "B", "B"],
        "sex": ["f", "f", "m", "m"],
        "dx": ["x", "y", "x", None],
        "drug": ["p", "p", "q", "r"],
    }
)


@pytest.mark.parametrize(
    ("frame", "qis", "sensitive", "threshold", "k", "expected"),
    [
        # classes 3, 2, 1 -> risks 1/3, 1/2, 1
        (
            SKEWED,
            ["zip", "age"],
            ["dx"],
            0.2,
            2,
            dict(
                equivalence_classes=3,
                k=1,
                prosecutor_risk_average=0.5,
                prosecutor_risk_highest=1.0,
                records_at_risk_share=1.0,
                sample_uniqueness=1 / 6,
                l_diversity={"dx": 1},
                classes_below_k=1,
                records_below_k=1,
            ),
        ),
        (
            SKEWED,
            ["zip", "age"],
            [],
            0.4,
            3,
            dict(equivalence_classes=3, k=1, records_at_risk_share=0.5, classes_below_k=2, records_below_k=3),
        ),
        (
            SKEWED,
            ["zip"],
            ["dx"],
            0.2,
            None,
            dict(equivalence_classes=3, k=1, l_diversity={"dx": 1}, classes_below_k=None),
        ),
        # nulls are their own category: (A,null)=2, (A,1)=1, (B,null)=1
        (
            WITH_NULLS,
            ["zip", "age"],
            ["dx"],
            0.2,
            None,
            dict(
                equivalence_classes=3, k=1, prosecutor_risk_average=0.75, sample_uniqueness=0.5, l_diversity={"dx": 1}
            ),
        ),
        # two classes of two; risk 0.5 is not above a 0.5 threshold; null counts as a value
        (
            TWO_PAIRS,
            ["zip", "sex"],
            ["dx", "drug"],
            0.5,
            2,
            dict(
                equivalence_classes=2,
                k=2,
                prosecutor_risk_average=0.5,
                prosecutor_risk_highest=0.5,
                records_at_risk_share=0.0,
                sample_uniqueness=0.0,
                l_diversity={"dx": 2, "drug": 1},
                classes_below_k=0,
                records_below_k=0,
            ),
        ),
    ],
)
def test_risk_report_small_tables(frame, qis, sensitive, threshold, k, expected):
    report = risk_report(frame, qis, sensitive, risk_threshold=threshold, k=k)
    assert report.records == len(frame)
    for name, value in expected.items():
        actual = getattr(report, name)
        if isinstance(value, float):
            assert actual == pytest.approx(value, abs=1e-15), name
        else:
            assert actual == value, name


def test_risk_report_metadata_is_plain_json():
    report = risk_report(TWO_PAIRS, ["zip", "sex"], ["dx"], k=2)
    metadata = report.to_metadata()
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata["quasi_identifiers"] == ["zip", "sex"]


def test_risk_report_reproduces_arx_raw_figures(adult):
    report = risk_report(adult, ADULT_COLUMNS)
    assert report.records == 30_162
    assert report.equivalence_classes == 19_502
    assert report.prosecutor_risk_average == pytest.approx(0.6465751607983555, abs=1e-12)
    assert report.sample_uniqueness == pytest.approx(0.5142895033485844, abs=1e-12)
    assert report.k == 1
    assert report.prosecutor_risk_highest == 1.0


# ---------------------------------------------------------------------------------------
# Optimal generalization: ARX's optima on adult.csv


# Losses are the strings ARX's TestAnonymizationKAnonymity asserts for
# Metric.createPrecomputedEntropyMetric(0.1d, true); the last case is also from that test.
@pytest.mark.parametrize(
    ("k", "suppression", "levels", "classes", "suppressed", "arx_loss"),
    [
        (5, 0.0, (1, 2, 1, 1, 3, 2, 2, 1, 1), 48, 0, 407289.5388925293),
        (100, 0.0, (0, 4, 1, 1, 3, 2, 2, 1, 1), 12, 0, 453196.8932458743),
        (5, 0.04, (1, 0, 1, 1, 3, 2, 2, 0, 1), None, 906, 255559.85455731067),
        (100, 0.04, (1, 1, 1, 1, 3, 2, 2, 1, 1), None, None, 379417.3460570988),
    ],
)
def test_arx_optima(adult, adult_hierarchies, k, suppression, levels, classes, suppressed, arx_loss):
    result = find_minimal_generalization(adult, ADULT_COLUMNS, adult_hierarchies, k, suppression)
    assert result.level_vector == levels
    assert result.loss == pytest.approx(arx_loss, rel=1e-13)
    assert result.loss_measure == LOSS_MEASURE
    if classes is not None:
        assert result.equivalence_classes == classes
    if suppressed is not None:
        assert result.records_suppressed == suppressed
    assert result.records_suppressed <= math.floor(suppression * len(adult))
    if suppressed:
        assert round(100 * result.suppressed_share, 1) == 3.0  # ARX: 906 records (3.0%)
    # Pruning must leave most of the 12,960-node lattice unchecked.
    assert result.lattice_size == 12_960
    assert result.nodes_evaluated < result.lattice_size / 4


def test_arx_suppression_case_output(adult, adult_hierarchies):
    levels = dict(zip(ADULT_COLUMNS, (1, 0, 1, 1, 3, 2, 2, 0, 1), strict=True))
    dropped = apply_generalization(adult, adult_hierarchies, levels, 5, 0.04)
    assert len(dropped) == 30_162 - 906
    after = risk_report(dropped, ADULT_COLUMNS)
    assert after.k >= 5
    flagged = apply_generalization(adult, adult_hierarchies, levels, 5, 0.04, suppressed="flag")
    assert int(flagged[SUPPRESSED_COLUMN].sum()) == 906
    assert (flagged.loc[flagged[SUPPRESSED_COLUMN], ADULT_COLUMNS] == "*").all().all()
    with pytest.raises(ValueError, match="more than"):
        apply_generalization(adult, adult_hierarchies, levels, 5, 0.0)


def test_generalization_loss_matches_search(adult, adult_hierarchies):
    levels = dict(zip(ADULT_COLUMNS, (1, 2, 1, 1, 3, 2, 2, 1, 1), strict=True))
    loss = generalization_loss(adult, adult_hierarchies, levels)
    assert loss == pytest.approx(407289.5388925293, rel=1e-13)


# ---------------------------------------------------------------------------------------
# The pruned search equals exhaustive enumeration on a small synthetic table


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, dict[str, Hierarchy]]:
    """A small random table with builder-made hierarchies (lattice of 60 nodes)."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "zip": rng.choice(["10115", "10117", "10243", "20095", "20097", "80331"], n),
            "sex": rng.choice(["f", "m"], n),
        }
    )
    hierarchies = {
        "age": age_bands((5, 10, 20), minimum=0, maximum=99),
        "zip": postcode_hierarchy(frame["zip"], name="zip"),
        "sex": Hierarchy("sex", [["f", "*"], ["m", "*"]]),
    }
    return frame, hierarchies


def _brute_force(frame, hierarchies, qis, k, suppression):
    """Every node checked; best by (loss, height, lexicographic levels)."""
    best = None
    for node in itertools.product(*(range(hierarchies[q].num_levels) for q in qis)):
        levels = dict(zip(qis, node, strict=True))
        try:
            apply_generalization(frame, hierarchies, levels, k, suppression)
        except ValueError as error:
            if "more than" not in str(error):
                raise
            continue
        rank = (generalization_loss(frame, hierarchies, levels), sum(node), node)
        best = rank if best is None or rank < best else best
    return best


@pytest.mark.parametrize(("k", "suppression"), [(2, 0.0), (5, 0.0), (5, 0.05), (20, 0.1)])
def test_search_equals_brute_force(synthetic, k, suppression):
    frame, hierarchies = synthetic
    qis = ["age", "zip", "sex"]
    result = find_minimal_generalization(frame, qis, hierarchies, k, suppression)
    loss, _, node = _brute_force(frame, hierarchies, qis, k, suppression)
    assert result.level_vector == node
    assert result.loss == pytest.approx(loss)


def test_no_generalization_possible():
    frame = pd.DataFrame({"sex": ["f", "m", "f"]})
    hierarchies = {"sex": Hierarchy("sex", [["f", "*"], ["m", "*"]])}
    with pytest.raises(NoGeneralizationError):
        find_minimal_generalization(frame, ["sex"], hierarchies, k=4)
    result = find_minimal_generalization(frame, ["sex"], hierarchies, k=2)
    assert result.level_vector == (1,)
    assert json.loads(json.dumps(result.to_metadata()))["levels"] == {"sex": 1}


# ---------------------------------------------------------------------------------------
# Error cases


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="'postcode'"):
        risk_report(SKEWED, ["zip", "postcode"])
    with pytest.raises(ValueError, match="'diagnosis'"):
        risk_report(SKEWED, ["zip"], ["diagnosis"])
    with pytest.raises(ValueError, match="'age'"):
        find_minimal_generalization(SKEWED, ["zip", "age"], {"zip": age_bands()}, k=2)


def test_empty_frame_rejected():
    with pytest.raises(ValueError, match="empty"):
        risk_report(SKEWED.iloc[0:0], ["zip"])
    with pytest.raises(ValueError, match="empty"):
        find_minimal_generalization(SKEWED.iloc[0:0], ["age"], {"age": age_bands()}, k=2)


def test_unknown_value_message_has_no_raw_value():
    hierarchy = postcode_hierarchy(["10115", "10117"], name="zip")
    values = pd.Series(["10115", "SECRET-99", "SECRET-99", "HIDDEN-7"], name="zip")
    with pytest.raises(ValueError) as caught:
        hierarchy.generalize(values, 1)
    message = str(caught.value)
    assert "'zip'" in message and "3 record(s)" in message and "2 distinct" in message
    assert "SECRET" not in message and "HIDDEN" not in message
    frame = pd.DataFrame({"zip": values})
    with pytest.raises(ValueError) as caught:
        find_minimal_generalization(frame, ["zip"], {"zip": hierarchy}, k=2)
    assert "SECRET" not in str(caught.value) and "HIDDEN" not in str(caught.value)


# ---------------------------------------------------------------------------------------
# Hierarchies


def test_adult_hierarchy_levels(adult_hierarchies):
    levels = {name: h.num_levels for name, h in adult_hierarchies.items()}
    assert levels == {
        "age": 5,
        "education": 4,
        "marital-status": 3,
        "native-country": 3,
        "workclass": 3,
        "occupation": 3,
        "race": 2,
        "sex": 2,
        "salary-class": 2,
    }
    assert adult_hierarchies["age"].mapping(2)["39"] == "30-39"


def test_load_hierarchy_and_generalize(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("a;ab;*\r\nb;ab;*\r\nc;c;*\r\n", encoding="utf-8")
    hierarchy = load_hierarchy(path)
    assert hierarchy.name == "h" and hierarchy.num_levels == 3 and hierarchy.top_label == "*"
    values = pd.Series(["c", None, "a", "b"], index=[10, 11, 12, 13], name="col")
    out = hierarchy.generalize(values, 1)
    assert out.index.tolist() == [10, 11, 12, 13] and out.name == "col"
    assert out.tolist()[0] == "c" and pd.isna(out.iloc[1]) and out.tolist()[2:] == ["ab", "ab"]
    assert hierarchy.generalize(values, 2).tolist() == ["*"] * 4  # nulls join the root
    with pytest.raises(ValueError, match="level 3"):
        hierarchy.generalize(values, 3)


def test_hierarchy_must_nest():
    with pytest.raises(ValueError, match="does not nest"):
        Hierarchy("bad", [["a", "x", "p"], ["b", "x", "q"]])
    with pytest.raises(ValueError, match="row 2"):
        Hierarchy("bad", [["a", "x", "*"], ["b", "*"]])


def test_builders():
    ages = age_bands((5, 10), minimum=0, maximum=99)
    assert ages.generalize(pd.Series([39, 40]), 1).tolist() == ["35-39", "40-44"]
    assert ages.generalize(pd.Series([39.0, 7.0]), 2).tolist() == ["30-39", "0-9"]
    dates = date_hierarchy(pd.to_datetime(["2020-01-05", "2021-03-07"]), name="dob")
    assert dates.num_levels == 4
    assert dates.generalize(pd.Series(pd.to_datetime(["2021-03-07"])), 1).tolist() == ["2021-03"]
    assert dates.generalize(pd.Series(["2020-01-05"]), 2).tolist() == ["2020"]
    zips = postcode_hierarchy(["10115", "8001"], name="zip", keep=(3, 1))
    assert zips.mapping(1) == {"10115": "101**", "8001": "800*"}
    assert zips.mapping(2) == {"10115": "1****", "8001": "8***"}
    buckets = numeric_buckets([1.5, 13.2], (5, 10), name="dose")
    assert buckets.mapping(1) == {"1.5": "[0, 5)", "13.2": "[10, 15)"}
    with pytest.raises(ValueError, match="multiple"):
        numeric_buckets([1, 2], (5, 7), name="x")
