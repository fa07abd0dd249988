"""Validate OpenLineage events with jsonschema: the event against the core schema, then every facet against the
schema its `_schemaURL` names (the way OpenLineage's own tests check facets).

The official specification is used when `OPENLINEAGE_SPEC_DIR` names a copy of its `spec/` folder (OpenLineage.json
and facets/*.json), or when the reference data beside the project holds one (`../shared/openlineage/spec`);
otherwise the project's schema written from its rules (tests/fixtures/openlineage/). This
project's own facets are always checked against `pipelines/lineage/openlineage_facets.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pipelines.lineage.openlineage import FACETS_SCHEMA

FIXTURES = Path(__file__).parent / "fixtures" / "openlineage"
SHARED_SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "openlineage" / "spec"
OFFICIAL_CORE = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
PROJECT_CORE = "urn:privacy-integration:tests:openlineage-run-event"


def _resources(paths: list[Path]) -> list[tuple[str, Resource]]:
    out = []
    for path in paths:
        schema = json.loads(path.read_text(encoding="utf-8"))
        if "$id" in schema:
            out.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012)))
    return out


class EventValidator:
    def __init__(self, spec_dir: Path | None = None):
        spec_dir = spec_dir or (
            Path(os.environ["OPENLINEAGE_SPEC_DIR"]) if os.environ.get("OPENLINEAGE_SPEC_DIR") else SHARED_SPEC
        )
        paths = [FACETS_SCHEMA, *FIXTURES.glob("*.schema.json")]
        self.official = bool(spec_dir and (spec_dir / "OpenLineage.json").exists())
        if self.official:
            paths += [spec_dir / "OpenLineage.json", *sorted((spec_dir / "facets").glob("*.json"))]
        self.registry = Registry().with_resources(_resources(paths))
        self.core = OFFICIAL_CORE if self.official else PROJECT_CORE
        self.formats = FormatChecker()

    def _validator(self, ref: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": ref}, registry=self.registry, format_checker=self.formats)

    def known(self, schema_url: str) -> bool:
        try:
            self.registry.resolver().lookup(schema_url)
            return True
        except Exception:  # noqa: BLE001 - referencing raises its own Unresolvable subclasses
            return False

    def errors(self, event: dict[str, Any]) -> list[str]:
        found = [
            f"event: {e.message} at {list(e.absolute_path)}" for e in self._validator(self.core).iter_errors(event)
        ]
        for where, facet in facets(event):
            url = facet.get("_schemaURL", "")
            if self.known(url):
                found += [
                    f"{where} ({url}): {e.message} at {list(e.absolute_path)}"
                    for e in self._validator(url).iter_errors(facet)
                ]
            elif self.official or url.startswith("urn:privacy-integration"):
                found.append(f"{where}: no schema for {url}")
        return found


def facets(event: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, facet in (event.get("run", {}).get("facets") or {}).items():
        yield f"run.{name}", facet
    for name, facet in (event.get("job", {}).get("facets") or {}).items():
        yield f"job.{name}", facet
    for side in ("inputs", "outputs"):
        for dataset in event.get(side) or []:
            for group in ("facets", "inputFacets", "outputFacets"):
                for name, facet in (dataset.get(group) or {}).items():
                    yield f"{side}[{dataset['name']}].{group}.{name}", facet
