"""Great Expectations results paired with their own expectations, and only safe values published."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from pipelines.quality.features import CLASS_SIZE, DISTINCT_PREFIX, RECORD_RISK
from pipelines.quality.runner import SuitePairingError, _pair, is_risk_feature, run_suite

SALARIES = [123457, 98765, 55555, 77777]

# Interleaved on purpose: GE 1.x regroups results by column, so positions stop matching.
INTERLEAVED = {
    "name": "interleaved",
    "expectations": [
        {"type": "expect_column_min_to_be_between", "kwargs": {"column": "salary", "min_value": 1}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": CLASS_SIZE}, "meta": {"notes": "sizes"}},
        {"type": "expect_column_max_to_be_between", "kwargs": {"column": "salary", "max_value": 200000}},
        {"type": "expect_column_min_to_be_between", "kwargs": {"column": CLASS_SIZE, "min_value": 5}},
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "salary", "min_value": 2}},
        {"type": "expect_column_max_to_be_between", "kwargs": {"column": RECORD_RISK, "max_value": 0.5}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10}},
        {"type": "expect_column_median_to_be_between", "kwargs": {"column": "salary", "min_value": 3}},
    ],
}


def _frame() -> pd.DataFrame:
    """Four people in two classes of two: k=2, risk 0.5."""
    return pd.DataFrame({"salary": SALARIES, CLASS_SIZE: [2, 2, 2, 2], RECORD_RISK: [0.5] * 4})


@pytest.mark.parametrize("with_docs", [False, True])
def test_interleaved_suite_pairs_each_result_with_its_own_expectation(tmp_path, with_docs):
    outcome = run_suite(INTERLEAVED, _frame(), tmp_path / "gx" if with_docs else None)
    specs = INTERLEAVED["expectations"]
    assert [(r.expectation, r.column) for r in outcome.results] == [
        (s["type"], s["kwargs"].get("column")) for s in specs
    ]
    assert [r.threshold for r in outcome.results] == [
        {k: v for k, v in s["kwargs"].items() if k != "column"} for s in specs
    ]
    by_kind = {(r.expectation, r.column): r for r in outcome.results}
    k = by_kind[("expect_column_min_to_be_between", CLASS_SIZE)]
    assert not k.success and k.observed == {"observed_value": 2}
    assert by_kind[("expect_column_max_to_be_between", RECORD_RISK)].observed == {"observed_value": 0.5}
    assert by_kind[("expect_table_row_count_to_be_between", None)].observed == {"observed_value": 4}
    not_null = by_kind[("expect_column_values_to_not_be_null", CLASS_SIZE)]
    assert not_null.notes == "sizes" and "observed_value" not in not_null.observed
    assert by_kind[("expect_column_max_to_be_between", "salary")].success  # 123457 <= 200000
    assert all(r.observed == {} for r in outcome.results if r.column == "salary")


@pytest.mark.parametrize("with_docs", [False, True])
def test_no_data_column_value_reaches_metadata_or_markdown(tmp_path, with_docs):
    frame = _frame()
    outcome = run_suite(INTERLEAVED, frame, tmp_path / "gx" if with_docs else None)
    published = json.dumps(outcome.to_metadata()) + outcome.markdown()
    aggregates = {min(SALARIES), max(SALARIES), frame["salary"].mean(), frame["salary"].median()}
    for value in [*SALARIES, *aggregates]:
        for text in {str(value), str(int(value)), f"{value:.1f}", f"{value:.4f}"}:
            assert text not in published, "a salary or an aggregate of salaries was published"


def test_risk_features_are_named_by_features_module_not_by_underscore():
    assert is_risk_feature(CLASS_SIZE) and is_risk_feature(RECORD_RISK) and is_risk_feature(DISTINCT_PREFIX + "salary")
    assert not is_risk_feature("_salary") and not is_risk_feature("salary") and not is_risk_feature(None)


def test_underscore_data_column_is_not_published():
    suite = {
        "name": "underscore",
        "expectations": [
            {"type": "expect_column_max_to_be_between", "kwargs": {"column": "_salary", "max_value": 10**6}},
        ],
    }
    outcome = run_suite(suite, pd.DataFrame({"_salary": SALARIES}))
    assert outcome.results[0].observed == {} and str(max(SALARIES)) not in json.dumps(outcome.to_metadata())


def test_counts_that_differ_are_refused():
    suite = {"name": "short", "expectations": INTERLEAVED["expectations"][:2]}
    with pytest.raises(SuitePairingError, match="2 expectations but 1 results"):
        _pair(
            suite,
            [SimpleNamespace(id="a"), SimpleNamespace(id="b")],
            [SimpleNamespace(expectation_config=SimpleNamespace(id="a"))],
        )


def test_a_result_for_an_unknown_or_repeated_expectation_is_refused():
    suite = {"name": "twice", "expectations": INTERLEAVED["expectations"][:2]}
    same = SimpleNamespace(expectation_config=SimpleNamespace(id="a"))
    with pytest.raises(SuitePairingError, match="matches no expectation, or one twice"):
        _pair(suite, [SimpleNamespace(id="a"), SimpleNamespace(id="b")], [same, same])


def test_duplicate_expectations_each_get_their_own_result():
    twice = {"type": "expect_column_min_to_be_between", "kwargs": {"column": CLASS_SIZE, "min_value": 1}}
    outcome = run_suite({"name": "dup", "expectations": [twice, dict(twice)]}, _frame())
    assert [r.observed for r in outcome.results] == [{"observed_value": 2}] * 2


def test_a_raised_exception_is_named_without_its_message():
    suite = {
        "name": "broken",
        "expectations": [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "name", "min_value": 0}},
        ],
    }
    outcome = run_suite(suite, pd.DataFrame({"name": ["Ada Lovelace", 3]}))
    result = outcome.results[0]
    assert not result.success and result.error == "MetricResolutionError"
    assert "Ada" not in json.dumps(outcome.to_metadata())
