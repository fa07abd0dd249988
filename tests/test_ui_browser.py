"""The steward's view in a real browser: Debian's Chromium, driven by Playwright, against dagster-webserver and the
Data Docs server over a finished run's instance. Screenshots go to data/screenshots/ (untracked), or to
$PIPELINES_SCREENSHOTS_DIR: set it to docs/screenshots to refresh the README's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pipelines.paths import PROJECT_ROOT
from tests.conftest import ground_truth, run_job

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(
    os.environ.get("PIPELINES_SCREENSHOTS_DIR") or PROJECT_ROOT / "data" / "screenshots"
)  # a test run leaves the repo as it was
LOCATION = "privacy_integration"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium): "
        "apt-get install -y chromium chromium-driver (.ci/run installs it)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout_s: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout_s:.0f} s: {log.read_text()[-2000:]}")


def _wait_for_location(base: str, timeout_s: float = 180) -> None:
    query = json.dumps(
        {
            "query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        }
    ).encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{base}/graphql", data=query, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            entries = json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            error = entry["locationOrLoadError"]
            assert error["__typename"] == "RepositoryLocation", f"code location failed to load: {error}"
            return
        time.sleep(1)
    raise TimeoutError(f"code location {LOCATION} did not load in {timeout_s:.0f} s")


@dataclass
class UI:
    base: str
    docs: str
    run_id: str
    key_id: str
    personal_values: list[str]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, demo_landing, pipeline_env):
    root = tmp_path_factory.mktemp("ui")
    home, data = root / "dagster_home", root / "data"
    home.mkdir()
    # sqlite storage under DAGSTER_HOME; no community sign-up dialog (it covers the page it opens on)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    shutil.copytree(demo_landing, data / "landing")
    web_port, docs_port = _free_port(), _free_port()
    docs = f"http://127.0.0.1:{docs_port}"
    saved = os.environ.get("PIPELINES_DATA_DOCS_URL")
    os.environ["PIPELINES_DATA_DOCS_URL"] = docs  # the links the run records point at this test's docs server
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            result, _ = run_job(data, instance=instance)
            assert result.success, "the pipeline run behind the UI failed"
            hr = next(
                e
                for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("deidentified_hr_employees")
            )
            key_id = hr.materialization.metadata["pseudonym_key_id"].value
    finally:
        if saved is None:
            os.environ.pop("PIPELINES_DATA_DOCS_URL", None)
        else:
            os.environ["PIPELINES_DATA_DOCS_URL"] = saved
    env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINES_DATA_DIR": str(data), "PIPELINES_DATA_DOCS_URL": docs}
    bin_dir = Path(sys.executable).parent
    logs = {name: root / f"{name}.log" for name in ("webserver", "docs")}
    processes = {
        "docs": subprocess.Popen(
            [sys.executable, "-m", "pipelines.quality.docs_server", "--data-dir", str(data), "--port", str(docs_port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=logs["docs"].open("w"),
            stderr=subprocess.STDOUT,
        ),
        "webserver": subprocess.Popen(
            [
                str(bin_dir / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(web_port),
                "-w",
                "workspace.yaml",
                "--read-only",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=logs["webserver"].open("w"),
            stderr=subprocess.STDOUT,
        ),
    }
    try:
        base = f"http://127.0.0.1:{web_port}"
        _wait(f"{docs}/index.html", 30, processes["docs"], logs["docs"])
        _wait(f"{base}/server_info", 120, processes["webserver"], logs["webserver"])
        _wait_for_location(base)
        yield UI(base, docs, result.run_id, key_id, [g["value"] for g in ground_truth(data / "landing")])
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def browser(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, ui):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.requested = requested
    yield page
    context.close()
    outside = sorted({u for u in requested if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))})
    assert not outside, f"the pages asked for something outside this machine: {outside[:5]}"


def _open(page, ui: UI, path: str) -> None:
    page.goto(ui.base + path)
    skip = page.get_by_role("button", name="Skip")  # Dagster's one-time community dialog
    try:
        skip.wait_for(timeout=4_000)
        skip.click()
    except Exception:  # noqa: BLE001 - the dialog did not show
        pass


def _no_personal_value(text: str, ui: UI, where: str) -> None:
    leaked = [v for v in ui.personal_values if v in text]
    assert not leaked, f"{len(leaked)} personal values on {where}"


def _markdown(page, key: str):
    """Open a markdown metadata entry ([Show Markdown] in the row of `key`) and return its dialog."""
    row = page.locator("tr", has=page.get_by_text(key, exact=True)).first
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").last
    dialog.wait_for()
    return dialog


def _shot(target, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    target.screenshot(path=str(path))
    return path


def test_asset_graph_shows_landed_raw_deidentified(page, ui):
    _open(page, ui, f"/locations/{LOCATION}/asset-groups/hr")
    for name in ("landed_hr_employees", "raw_hr_employees", "deidentified_hr_employees"):
        page.get_by_text(name, exact=True).first.wait_for()
    page.get_by_text("Materialized").first.wait_for()
    _shot(page, "asset-graph.png")
    _no_personal_value(page.inner_text("body"), ui, "the asset graph")


def test_deidentification_table_names_operators_and_key_id(page, ui):
    _open(page, ui, "/assets/deidentified_hr_employees")
    page.get_by_text("pii/state: pseudonymized").first.wait_for()  # the column tags
    dialog = _markdown(page, "deidentification_table")
    text = dialog.inner_text()
    for expected in ("pseudonymize", "suppress", "generalize", "ssn", "email", ui.key_id):
        assert expected in text, f"{expected!r} not in the de-identification table"
    _shot(dialog, "deidentification-table.png")  # the table fits its dialog
    _no_personal_value(page.inner_text("body"), ui, "the de-identified asset")


def test_privacy_card_traces_every_source_column_to_the_mart(page, ui):
    _open(page, ui, "/assets/published_mart_org_unit_activity")
    dialog = _markdown(page, "privacy_card")
    text = dialog.inner_text()
    for expected in (
        "Privacy card: mart_org_unit_activity",
        "never reached this mart",
        "suppressed: never left the raw database",
        "aggregated into",
        "used only as a join key",
        "privacy_suite",
        "passed",
    ):
        assert expected in text, f"{expected!r} not on the privacy card"
    assert dialog.locator(f'a[href$="/runs/{ui.run_id}"]').count() >= 1  # the publishing run, as a link
    dialog.get_by_text(
        "Privacy card: mart_org_unit_activity"
    ).scroll_into_view_if_needed()  # the dialog opens at its Close button
    _shot(page, "privacy-card.png")
    _no_personal_value(page.inner_text("body"), ui, "the privacy card")


def test_check_passed_and_its_data_docs_link_renders_the_validation(page, ui):
    _open(page, ui, "/assets/deidentified_hr_employees?view=checks")
    page.get_by_text("privacy_suite", exact=True).first.click()
    page.get_by_text("Passed", exact=True).first.wait_for()
    page.get_by_text("expectations passed").first.wait_for()
    table = _markdown(page, "results_table").inner_text()
    assert "expect_column_min_to_be_between" in table and "_equivalence_class_size" in table
    page.keyboard.press("Escape")
    link = page.locator(f'a[href^="{ui.docs}/validations/"]').first
    href = link.get_attribute("href")
    assert "hr_employees" in href and href.endswith(".html")
    _shot(page, "check.png")
    _no_personal_value(page.inner_text("body"), ui, "the check")
    with page.context.expect_page() as opened:
        link.click()
    docs = opened.value
    docs.wait_for_load_state()
    assert docs.url == href
    text = docs.inner_text("body")
    assert "Expectation Validation Result" in text and "hr_employees.privacy" in text
    assert "passed" in text and "failed" not in text.replace("Failed Only", "")
    _shot(docs, "data-docs.png")
    _no_personal_value(text, ui, "the Data Docs page")
    docs.requested = []
