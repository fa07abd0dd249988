"""Serve the Data Docs site over http (`make ui` starts it beside the Dagster UI): browsers refuse `file://` links
from a web page, and the check metadata links each validation's own page here."""

from __future__ import annotations

import argparse
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipelines.quality import data_docs
from pipelines.resources import default_data_dir

# the pages are offline copies; this makes sure a browser fetches nothing else, whatever a future GE version adds
POLICY = (
    "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'none'"
)


class DocsHandler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def list_directory(self, path):  # noqa: ANN001 - the index page lists what there is to see
        self.send_error(404, "No listing; start at /index.html")
        return None

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - one quiet line per request is enough
        pass


def make_server(site: Path, host: str = "127.0.0.1", port: int = 3001) -> ThreadingHTTPServer:
    site.mkdir(parents=True, exist_ok=True)
    return ThreadingHTTPServer((host, port), functools.partial(DocsHandler, directory=str(site)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.quality.docs_server", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $PIPELINES_DATA_DIR or data/")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    site = data_docs.served_site((args.data_dir or default_data_dir()) / "gx")
    server = make_server(site, args.host, args.port)
    print(f"Data Docs: http://{args.host}:{server.server_port}/index.html (from {site})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
