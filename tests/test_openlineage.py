"""OpenLineage events of a real run: valid against the schema, carrying the de-identification facts, never a value."""

from __future__ import annotations

import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from pipelines.lineage import openlineage as ol
from pipelines.resources import PipelineStorage
from tests.conftest import ground_truth
from tests.openlineage_schema import EventValidator


@pytest.fixture(scope="module")
def asset_graph(pipeline_run):
    from pipelines.definitions import build_definitions

    return build_definitions(pipeline_run.data_dir).resolve_asset_graph()


@pytest.fixture(scope="module")
def emitted(pipeline_run, asset_graph, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ol") / "data"
    path = ol.emit_run(pipeline_run.instance, pipeline_run.result.run_id, data_dir, asset_graph, endpoint=None)
    return path, ol.read_events(path)


def _outputs(events, name):
    return [o for e in events if e["eventType"] == "COMPLETE" for o in e.get("outputs", []) if o["name"] == name]


def test_every_event_validates_against_the_openlineage_schema(emitted):
    validator = EventValidator()
    _, events = emitted
    errors = [error for event in events for error in validator.errors(event)]
    assert not errors, errors[:5]
    facet_names = {
        name
        for e in events
        for o in e.get("outputs", [])
        for name in [*o.get("facets", {}), *o.get("outputFacets", {})]
    }
    assert {
        "schema",
        "columnLineage",
        "tags",
        "pipelines_privacy",
        "pipelines_checks",
        "outputStatistics",
        "dataQualityAssertions",
    } <= facet_names


def test_the_run_and_each_step_start_and_end(emitted, pipeline_run):
    _, events = emitted
    run_id = pipeline_run.result.run_id
    run_events = [e for e in events if e["run"]["runId"] == run_id]
    assert [e["eventType"] for e in run_events] == ["START", "COMPLETE"] and run_events[0]["job"][
        "name"
    ] == "integrate_all"
    steps = {}
    for e in events:
        if e["run"]["runId"] != run_id:
            assert e["run"]["facets"]["parent"]["run"]["runId"] == run_id
            steps.setdefault(e["job"]["name"], []).append(e["eventType"])
    assert steps and all(kinds == ["START", "COMPLETE"] for kinds in steps.values()), steps
    assert "integrate_all.deidentified_hr_employees" in steps and "integrate_all.publish_approved_marts" in steps
    assert len({e["run"]["runId"] for e in events}) == len(steps) + 1


def test_deidentification_facet_names_operators_entities_key_id_and_thresholds(emitted, pipeline_run):
    _, events = emitted
    [hr] = _outputs(events, "deidentified_hr_employees")
    privacy = hr["facets"]["pipelines_privacy"]
    by_column = {c["column"]: c for c in privacy["columns"]}
    assert by_column["email"]["operator"] == "pseudonymize" and by_column["email"]["entity"] == "EMAIL_ADDRESS"
    assert by_column["email"]["key_id"].startswith("k-") and by_column["email"]["state"] == "pseudonymized"
    figures = privacy["figures"]
    assert figures["pseudonym_key_id"] == by_column["email"]["key_id"]
    assert figures["k_anonymity"]["k"] >= 2 and figures["rows_in"] >= figures["rows_out"] > 0
    assert {c["column"]: c["operator"] for c in figures["deidentification"]["columns"]}["ssn"] == "suppress"
    checks = {c["check"]: c for c in hr["facets"]["pipelines_checks"]["checks"]}
    privacy_suite = checks["privacy_suite"]
    assert privacy_suite["passed"] and privacy_suite["data_docs"].startswith("http")
    k = next(x for x in privacy_suite["expectations"] if x["expectation"] == "expect_column_min_to_be_between")
    assert (
        k["threshold"]["min_value"] == figures["k_anonymity"]["k"]
        and k["observed"]["observed_value"] >= k["threshold"]["min_value"]
    )
    # column lineage back to the raw table, as on the asset
    assert hr["facets"]["columnLineage"]["fields"]["email"]["inputFields"][0]["name"] == "raw_hr_employees"


def test_published_mart_carries_risk_and_the_mart_check_is_an_assertion(emitted):
    _, events = emitted
    [published] = _outputs(events, "published_mart_org_unit_activity")
    risk = published["facets"]["pipelines_privacy"]["figures"]["risk"]
    assert risk["k_over_quasi_identifiers"] >= 2 and 0 < risk["prosecutor_risk_highest"] <= 1
    states = {c["column"]: c["state"] for c in published["facets"]["pipelines_privacy"]["columns"]}
    assert states["headcount"] == "aggregated" and "identifying" not in states.values()
    checked = [
        i for e in events for i in e.get("inputs", []) if i["name"] == "mart_org_unit_activity" and i.get("inputFacets")
    ]
    assertions = {
        a["assertion"]: a["success"] for i in checked for a in i["inputFacets"]["dataQualityAssertions"]["assertions"]
    }
    assert assertions.get("privacy_suite") is True


def test_no_personal_value_or_key_in_any_event(emitted, pipeline_run, pipeline_env):
    path, _ = emitted
    text = path.read_text(encoding="utf-8")
    leaked = [g for g in ground_truth(pipeline_run.landing) if g["value"] in text]
    assert not leaked, (
        f"{len(leaked)} personal values in OpenLineage events, e.g. {[(g['dataset'], g['column']) for g in leaked[:5]]}"
    )
    assert pipeline_env not in text


def test_events_file_is_owner_only_and_written_once(emitted, pipeline_run, asset_graph):
    path, _ = emitted
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    before = path.read_bytes()
    assert (
        ol.emit_run(pipeline_run.instance, pipeline_run.result.run_id, path.parent.parent, asset_graph, endpoint=None)
        == path
    )
    assert path.read_bytes() == before


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_configured_endpoint_receives_the_same_events(pipeline_run, asset_graph, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.received = []
    try:
        monkeypatch.setenv(
            "OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_port}"
        )  # openlineage-python's own setting
        path = ol.emit_run(pipeline_run.instance, pipeline_run.result.run_id, tmp_path, asset_graph)
    finally:
        server.shutdown()
        server.server_close()
    written = ol.read_events(path)
    assert [p for p, _ in _Collector.received] == ["/api/v1/lineage"] * len(written)
    assert [(e["eventType"], e["run"]["runId"]) for _, e in _Collector.received] == [
        (e["eventType"], e["run"]["runId"]) for e in written
    ]


def test_unreachable_endpoint_leaves_the_file_written(pipeline_run, asset_graph, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TIMEOUT", "1")
    path = ol.emit_run(pipeline_run.instance, pipeline_run.result.run_id, tmp_path, asset_graph)
    assert path.exists() and ol.read_events(path)


def test_sensor_emits_each_finished_run_once(pipeline_run, tmp_path):
    from pipelines.definitions import build_definitions

    defs = build_definitions(tmp_path)
    sensor = defs.resolve_sensor_def("openlineage_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    storage = PipelineStorage(data_dir=str(tmp_path))
    context = dg.build_sensor_context(instance=pipeline_run.instance, resources={"storage": storage}, definitions=defs)
    result = sensor(context)
    assert "1 run(s) emitted" in result.skip_message
    assert ol.events_path(tmp_path, pipeline_run.result.run_id).exists()
    again = dg.build_sensor_context(
        instance=pipeline_run.instance, resources={"storage": storage}, definitions=defs, cursor=context.cursor
    )
    assert "0 run(s) emitted" in sensor(again).skip_message


def test_a_failed_step_sends_fail_without_the_exceptions_text(tmp_path):
    @dg.asset
    def leaky():
        raise ValueError("Jane Roe, 078-05-1120")  # an exception that quotes a cell

    @dg.asset
    def refused():
        raise dg.Failure(description="hr_employees: k-anonymity 3 below 5; nothing was replaced.")

    instance = dg.DagsterInstance.ephemeral()
    events = []
    for asset in (leaky, refused):
        result = dg.materialize([asset], instance=instance, raise_on_error=False)
        path = ol.emit_run(instance, result.run_id, tmp_path, endpoint=None)
        events.append(ol.read_events(path))
    leaky_fail = next(e for e in events[0] if e["eventType"] == "FAIL" and e["job"]["name"].endswith(".leaky"))
    assert "Jane" not in json.dumps(events[0]) and "078-05" not in json.dumps(events[0])
    assert leaky_fail["run"]["facets"]["errorMessage"]["message"].startswith("ValueError (message withheld")
    refused_fail = next(e for e in events[1] if e["eventType"] == "FAIL" and e["job"]["name"].endswith(".refused"))
    assert (
        refused_fail["run"]["facets"]["errorMessage"]["message"]
        == "hr_employees: k-anonymity 3 below 5; nothing was replaced."
    )
    assert [e["eventType"] for e in events[1] if "." not in e["job"]["name"]] == ["START", "FAIL"]
    assert not [err for e in events[0] + events[1] for err in EventValidator().errors(e)]


def test_disabled_writes_nothing(pipeline_run, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert ol.emit_run(pipeline_run.instance, pipeline_run.result.run_id, tmp_path) is None
    assert not (tmp_path / ol.EVENTS_DIR).exists()


def test_the_validator_refuses_a_malformed_event(tmp_path):
    bad = {
        "eventTime": "2026-01-01T00:00:00Z",
        "producer": "urn:x",
        "schemaURL": "urn:y",
        "run": {"runId": "no"},
        "job": {"namespace": "n"},
        "outputs": [{"namespace": "n", "name": "t", "facets": {"pipelines_privacy": {"columns": [], "figures": {}}}}],
    }
    assert EventValidator().errors(bad)  # the official schema too, when given (its oneOf reports one error)
    errors = "\n".join(EventValidator(tmp_path).errors(bad))  # a folder without the specification: the project's schema
    assert "'no' is not a 'uuid'" in errors
    assert "'name' is a required property" in errors
    assert "'_producer' is a required property" in errors


def test_endpoint_comes_from_openlineage_pythons_own_configuration(tmp_path, monkeypatch):
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG", "OPENLINEAGE_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no openlineage.yml here
    assert ol.endpoint_client() is None
    config = tmp_path / "lineage.yml"
    config.write_text(f"transport:\n  type: file\n  log_file_path: {tmp_path / 'elsewhere.jsonl'}\n  append: true\n")
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    assert type(ol.endpoint_client().transport).__name__ == "FileTransport"
    monkeypatch.delenv("OPENLINEAGE_CONFIG")
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:5000")
    assert type(ol.endpoint_client().transport).__name__ == "HttpTransport"
