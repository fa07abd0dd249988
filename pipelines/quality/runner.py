"""Run a Great Expectations suite on a table and keep only what is safe to publish (no cell values)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import count
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.privacy.disclosure import CLASS_SIZE, DISTINCT_PREFIX, RECORD_RISK
from pipelines.quality import data_docs
from pipelines.quality.suites import is_parameter

# GE prints progress bars per validation; they would flood run logs
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TQDM_DISABLE", "1")
logging.getLogger("great_expectations").setLevel(logging.WARNING)

# Result fields that are counts or shares, never values from the data.
SAFE_RESULT_KEYS = ("element_count", "unexpected_count", "unexpected_percent", "missing_count", "missing_percent")
# Expectations whose observed value is an aggregate that names no person.
_OBSERVED_IS_SAFE = {"expect_table_row_count_to_be_between", "expect_table_columns_to_match_set"}
# Columns that `pipelines.privacy.disclosure` derives (class sizes, risks, distinct counts): aggregates, not cells.
RISK_FEATURES = (CLASS_SIZE, RECORD_RISK)
RISK_FEATURE_PREFIXES = (DISTINCT_PREFIX,)
_ids = count()


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    threshold: dict[str, Any]
    observed: dict[str, Any]
    notes: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, "")} | {"success": self.success}


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    results: list[ExpectationOutcome] = field(default_factory=list)
    data_docs: str | None = None  # http URL of this validation's Data Docs page (served offline), when built

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success]

    def to_metadata(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "expectations": len(self.results),
            "failed": len(self.failed),
            "results": [r.to_dict() for r in self.results],
        }

    def markdown(self) -> str:
        lines = ["| expectation | column | ok | observed | threshold |", "|---|---|---|---|---|"]
        for r in self.results:
            lines.append(
                f"| {r.expectation} | {r.column or '-'} | {'yes' if r.success else '**no**'} | "
                f"{_fmt(r.observed)} | {_fmt(r.threshold)} |"
            )
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """numpy scalars and sets to JSON types, so results can be stored as metadata."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) or "-"


@lru_cache(maxsize=1)
def _context() -> Any:
    import great_expectations as gx

    return _without_progress_bars(gx.get_context(mode="ephemeral"))


def _without_progress_bars(context: Any) -> Any:
    """GE draws a tqdm bar per validation ("Calculating Metrics"); in run logs they are noise (TQDM_DISABLE is not read)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _thresholds(kwargs: dict[str, Any]) -> dict[str, Any]:
    keep = ("min_value", "max_value", "mostly", "value_set", "exact_match")
    out = {k: kwargs[k] for k in keep if k in kwargs and kwargs[k] is not None}
    if "regex_list" in kwargs:
        out["patterns"] = len(kwargs["regex_list"])
    return out


def is_risk_feature(column: str | None) -> bool:
    """Whether `column` is one of the risk features `pipelines.privacy.disclosure` adds (never a data column)."""
    return column is not None and (column in RISK_FEATURES or column.startswith(RISK_FEATURE_PREFIXES))


def _observed(kind: str, column: str | None, result: dict[str, Any]) -> dict[str, Any]:
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k in SAFE_RESULT_KEYS}
    # a data column's min, max, mean or set would be a cell value (a salary, a birth date)
    table_level = column is None and kind in _OBSERVED_IS_SAFE
    if "observed_value" in result and (table_level or is_risk_feature(column)):
        value = result["observed_value"]
        out["observed_value"] = (
            sorted(value) if isinstance(value, (set, list)) and kind.endswith("match_set") else value
        )
    if kind == "expect_table_columns_to_match_set" and "details" in result:
        mismatched = result["details"].get("mismatched", {})
        out |= {k: sorted(v) for k, v in mismatched.items()}
    return out


RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0}  # no sample values, anywhere


@lru_cache(maxsize=4)
def _file_context(root: str) -> Any:
    import great_expectations as gx

    return _without_progress_bars(gx.get_context(mode="file", project_root_dir=root))


def _expectations(suite: dict[str, Any]) -> list[Any]:
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return [
        ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta=e.get("meta", {})).to_domain_obj()
        for e in suite["expectations"]
    ]


def _validate_ephemeral(expectations: list[Any], name: str, frame: pd.DataFrame, parameters: dict[str, Any]) -> Any:
    """Validate in the in-memory context; the suite is stored there too, so GE gives each expectation its id."""
    import great_expectations as gx

    context = _context()
    name = f"{name}_b{next(_ids)}"
    source = context.data_sources.add_pandas(f"source_{name}")
    gx_suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    try:
        batch = (
            source.add_dataframe_asset(f"asset_{name}")
            .add_batch_definition_whole_dataframe(name)
            .get_batch(batch_parameters={"dataframe": frame})
        )
        return batch.validate(gx_suite, result_format=RESULT_FORMAT, expectation_parameters=parameters)
    finally:
        context.suites.delete(name)
        context.data_sources.delete(source.name)


def _validate_with_docs(
    expectations: list[Any],
    name: str,
    frame: pd.DataFrame,
    root: Path,
    parameters: dict[str, Any],
    docs_url: str | None = None,
) -> tuple[Any, str]:
    """Validate through a checkpoint of a file-backed context, so GE stores the result and rebuilds Data Docs."""
    import great_expectations as gx

    context = _file_context(str(root))
    source = context.data_sources.add_or_update_pandas("frames")
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch_definition = next(
        (b for b in asset.batch_definitions if b.name == "batch"), None
    ) or asset.add_batch_definition_whole_dataframe("batch")
    gx_suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=gx_suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            result_format=RESULT_FORMAT,
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters)
    identifier, validation = next(iter(result.run_results.items()))
    gx_root = Path(context.root_directory)  # GE keeps its project in a `gx` folder under the root it is given
    data_docs.make_offline(gx_root)
    return validation, _page(context, identifier, gx_root, docs_url)


def _page(context: Any, identifier: Any, gx_root: Path, docs_url: str | None = None) -> str:
    """The http URL of this validation's own page (not the index), where `make ui`'s docs server serves it."""
    from urllib.parse import unquote, urlparse

    sites = context.get_docs_sites_urls(resource_identifier=identifier)
    page = Path(unquote(urlparse(sites[0]["site_url"]).path)) if sites else None
    site = data_docs.site_dir(gx_root).resolve()
    if page is None or not page.resolve().is_relative_to(site):
        return data_docs.page_url("index.html", docs_url)
    return data_docs.page_url(page.resolve().relative_to(site).as_posix(), docs_url)


class SuitePairingError(RuntimeError):
    """Great Expectations returned results that cannot be matched one to one with the suite's expectations."""


def _pair(suite: dict[str, Any], expectations: list[Any], results: list[Any]) -> list[tuple[dict[str, Any], Any]]:
    """Each result with the expectation it validated, by the id GE stamped on it, in the suite's order.

    GE 1.x regroups results by column, so their position says nothing about which expectation they answer.
    """
    specs = suite["expectations"]
    if len(results) != len(specs):
        raise SuitePairingError(f"suite {suite['name']}: {len(specs)} expectations but {len(results)} results")
    # the objects were built from the specs one by one, so this zip pairs construction, not GE's output
    position = {e.id: i for i, e in enumerate(expectations) if e.id is not None}
    if len(position) != len(specs):
        raise SuitePairingError(f"suite {suite['name']}: Great Expectations did not give every expectation its own id")
    found: dict[int, Any] = {}
    for res in results:
        i = position.get(getattr(res.expectation_config, "id", None))
        if i is None or i in found:
            raise SuitePairingError(f"suite {suite['name']}: a result matches no expectation, or one twice")
        found[i] = res
    return [(specs[i], found[i]) for i in range(len(specs))]


def _error(res: Any) -> str | None:
    """The exception types a result raised, without their messages (a message may quote a cell)."""
    # GE 1.x keys exception_info by metric; each entry holds raised_exception and a traceback
    infos = [i for i in (res.exception_info or {}).values() if isinstance(i, dict) and i.get("raised_exception")]
    kinds = {_exception_type(str(i.get("exception_traceback") or "")) for i in infos}
    return ", ".join(sorted(kinds)) or None


def _exception_type(traceback: str) -> str:
    """`MetricResolutionError` from a traceback's last line `great_expectations...MetricResolutionError: ...`."""
    last = traceback.strip().rsplit("\n", 1)[-1]
    return last.split(":", 1)[0].rsplit(".", 1)[-1].strip() or "error"


_NAME = re.compile(r"[A-Za-z_]\w*")


def _parameter_names(suite: dict[str, Any]) -> set[str]:
    """Every parameter the suite's `{"$PARAMETER": ...}` expressions name."""
    return {
        name
        for e in suite["expectations"]
        for value in e.get("kwargs", {}).values()
        if is_parameter(value)
        for name in _NAME.findall(value["$PARAMETER"])
    }


def _resolved(kwargs: dict[str, Any], res: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """The suite's kwargs with each parameter replaced by the value it had in this validation."""
    validated = getattr(res.expectation_config, "kwargs", {}) or {}
    out = {}
    for key, value in kwargs.items():
        if is_parameter(value):
            expression = value["$PARAMETER"]
            value = parameters[expression] if expression in parameters else validated.get(key)
        out[key] = value
    return out


def _outcome(spec: dict[str, Any], res: Any, parameters: dict[str, Any]) -> ExpectationOutcome:
    """What is safe to publish of one expectation's result: its own column and thresholds, counts, risk aggregates."""
    kwargs = spec["kwargs"]
    return ExpectationOutcome(
        expectation=spec["type"],
        column=kwargs.get("column"),
        success=bool(res.success),
        threshold=_plain(_thresholds(_resolved(kwargs, res, parameters))),
        observed=_plain(_observed(spec["type"], kwargs.get("column"), res.result or {})),
        notes=spec.get("meta", {}).get("notes"),
        error=_error(res),
    )


def run_suite(
    suite: dict[str, Any],
    frame: pd.DataFrame,
    docs_root: Path | None = None,
    parameters: dict[str, Any] | None = None,
    docs_url: str | None = None,
) -> SuiteOutcome:
    """Validate `frame` against a suite (as stored in `expectations/`); results carry no cell values.

    `parameters` fill the suite's `{"$PARAMETER": ...}` thresholds (from the contract or approval; see
    `suites.privacy_parameters`). With `docs_root`, results are kept in a Great Expectations project there and its
    Data Docs rebuilt; the outcome links its page on the site served at `docs_url` (see `data_docs.docs_base_url`).
    """
    parameters = dict(parameters or {})
    missing = sorted(_parameter_names(suite) - set(parameters))
    if missing:
        raise ValueError(
            f"suite {suite['name']} needs the parameters {missing}: pass them from its contract or approval"
        )
    page = None
    expectations = _expectations(suite)
    if docs_root is None:
        validation = _validate_ephemeral(expectations, suite["name"], frame, parameters)
    else:
        validation, page = _validate_with_docs(expectations, suite["name"], frame, docs_root, parameters, docs_url)
    outcomes = [_outcome(spec, res, parameters) for spec, res in _pair(suite, expectations, validation.results)]
    return SuiteOutcome(suite["name"], all(o.success for o in outcomes), outcomes, data_docs=page)
