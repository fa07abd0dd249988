"""Data Docs that open offline: each check links its own validation page over http, and no page loads anything
from the internet."""

from __future__ import annotations

import re
import threading
import urllib.request

import pandas as pd
import pytest

from pipelines.quality import data_docs
from pipelines.quality.docs_server import make_server
from pipelines.quality.runner import run_suite

SUITE = {
    "name": "demo.quality",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "salary"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10}},
    ],
}
SALARIES = [123457, 98765, None]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//""", re.I)


@pytest.fixture()
def built(tmp_path, monkeypatch):
    monkeypatch.setenv(data_docs.DOCS_URL_ENV, "http://docs.test:9999/")
    first = run_suite(SUITE, pd.DataFrame({"salary": SALARIES}), tmp_path / "gx")
    second = run_suite(SUITE, pd.DataFrame({"salary": SALARIES[:2]}), tmp_path / "gx")
    return tmp_path / "gx", first, second


def test_each_outcome_links_its_own_validation_page_over_http(built):
    gx_dir, first, second = built
    site = data_docs.served_site(gx_dir)
    for outcome in (first, second):
        assert outcome.data_docs.startswith("http://docs.test:9999/validations/") and outcome.data_docs.endswith(
            ".html"
        )
        assert (site / outcome.data_docs.removeprefix("http://docs.test:9999/")).is_file()
    assert first.data_docs != second.data_docs  # the exact validation, not the index


def test_no_page_loads_anything_from_the_internet(built):
    site = data_docs.served_site(built[0])
    pages = list(site.rglob("*.html")) + list(site.rglob("*.css"))
    assert len(list(site.rglob("*.html"))) >= 3
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not EXTERNAL.search(text), f"{page.relative_to(site)} loads an external asset"
        assert "<script" not in text.lower()


def test_status_is_written_in_words_and_index_lists_every_validation(built):
    gx_dir, first, second = built
    site = data_docs.served_site(gx_dir)
    page = (site / first.data_docs.removeprefix("http://docs.test:9999/")).read_text(encoding="utf-8")
    assert 'class="status failed">failed' in page and 'class="status passed">passed' in page  # icons became words
    index = (site / "index.html").read_text(encoding="utf-8")
    assert index.count("demo.quality</a>") == 2
    assert index.index("status passed") < index.index("status failed")  # newest (the passing batch) first
    for relative in (first.data_docs, second.data_docs):
        assert relative.removeprefix("http://docs.test:9999/") in index


def test_rewriting_is_idempotent():
    page = '<html><head><script src="https://cdn.x/a.js"></script><link rel="stylesheet" href="https://cdn.x/b.css"></head><body><i class="fas fa-times text-danger"></i></body></html>'
    once = data_docs.offline_html(page, 2)
    assert data_docs.offline_html(once, 2) == once
    assert "cdn.x" not in once and "../../static/styles/offline.css" in once and "failed" in once


def test_server_serves_the_site_with_a_policy_that_forbids_other_origins(built):
    gx_dir, first, _ = built
    server = make_server(data_docs.served_site(gx_dir), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        with urllib.request.urlopen(base + first.data_docs.removeprefix("http://docs.test:9999/")) as response:
            body = response.read().decode()
            assert "script-src 'none'" in response.headers["Content-Security-Policy"]
        assert "Expectation Validation Result" in body and "demo.quality" in body
        for value in ("123457", "98765"):
            assert value not in body
        with pytest.raises(urllib.error.HTTPError):  # no directory listings
            urllib.request.urlopen(base + "validations/")
    finally:
        server.shutdown()
        server.server_close()
