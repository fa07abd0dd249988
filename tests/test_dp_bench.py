"""`make bench` sections 7 (privacy over time) and 8 (DP): `--only` splices them into the report, and they render figures."""

from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

import pytest

from bench import splice
from bench.__main__ import named_sections, parse_args

REPORT = """# Benchmarks

## Findings

- one

## 5. The whole pipeline

five

## 6. Utility: over-masking

six (another engineer's section)

## Optimizations

log
"""


def test_only_names_sections_and_means_splicing():
    assert named_sections("lifecycle,dp") == (7, 8) and named_sections("dp, 7") == (7, 8)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown section"):
        named_sections("lifecycle,spark-ish")
    assert parse_args(["--only", "lifecycle,dp"]).only == (7, 8)


def test_splice_inserts_then_replaces_only_its_own_section():
    once = splice(REPORT, 7, "## 7. Privacy over time\n\nfirst\n")
    assert once.index("## 6.") < once.index("## 7.") < once.index("## Optimizations")
    twice = splice(splice(once, 8, "## 8. Differential privacy\n\nx\n"), 7, "## 7. Privacy over time\n\nsecond\n")
    assert "first" not in twice and "second" in twice and twice.count("## 7.") == 1
    assert twice.index("## 7.") < twice.index("## 8.") < twice.index("## Optimizations")
    for untouched in ("# Benchmarks", "- one", "five", "six (another engineer's section)", "log"):
        assert untouched in twice


def test_lifecycle_section_renders_the_ratio_and_where_time_goes():
    from bench.lifecycle import render

    figures = {
        "status": "success",
        "rows_per_department": 100_000,
        "full_run_s": 300.0,
        "request_to_proven_absence_s": 120.0,
        "cost_vs_full_run": 0.4,
        "peak_rss_mib": 900,
        "state": "applied",
        "person_rows": {"hr_employees": 1},
        "person_mentioned_in": [],
        "proven_absent_in": ["deidentified_hr_employees", "mart_org_unit_activity"],
        "full_run_steps": {"raw_hr_employees": 20.0, "deidentified_hr_employees": 60.0, "approved_models": 30.0},
        "runs": [
            {"run": "resolve", "assets": ["subject_requests"], "seconds": 2.0, "steps": {"subject_requests": 1.5}},
            {
                "run": "apply",
                "assets": ["deidentified_hr_employees", "mart_org_unit_activity"],
                "seconds": 110.0,
                "steps": {"deidentified_hr_employees": 66.0, "approved_models": 33.0},
            },
        ],
    }
    text = render([figures], seed=7)
    assert text.startswith("## 7. ") and "| 100,000 | 300 | 120 | 0.40x |" in text
    assert "| 100,000 | de-identify + gates (deidentified_*) | 60.0 | 66.0 |" in text
    assert "0.90x" in text  # the same steps: 90 s in the full run, 100.5 s on the request path (with subject_requests)


def test_dp_section_measures_time_and_error_beside_the_k_mart(tmp_path):
    from bench.dp import section_dp

    cfg = SimpleNamespace(workdir=tmp_path, lifecycle_rows=(2000,), dp_rows=(3000,), dp_repeats=4, seed=7)
    text, data = section_dp(cfg, lambda message: None)  # no section-7 run here: the synthetic input alone
    assert list(data["inputs"]) == ["synthetic, 3,000 people (the demo's 16 groups and shares)"]
    figures = data["inputs"]["synthetic, 3,000 people (the demo's 16 groups and shares)"]
    assert set(figures["accuracy"]["dp"]) == {"0.5", "1.0", "2.0"}
    errors = [figures["accuracy"]["dp"][e]["error"]["headcount"]["mean_abs_error"] for e in ("0.5", "2.0")]
    assert errors[0] > errors[1]  # four times the noise scale at a quarter of the epsilon
    assert figures["accuracy"]["k_mart"]["min_group_size"] == 5
    assert text.startswith("## 8. ") and re.search(r"\| synthetic, 3,000 people .*\| 3,000 \| 16 \|", text)
