"""`python -m bench.known_index` at a tiny size: both indexes hold the same identifiers; the compact one about 8 bytes
each, the old one far more; the section is spliced into a report once (rerun replaces it)."""

from __future__ import annotations

from bench import known_index


def test_compact_index_holds_the_same_identifiers_in_a_tenth_of_the_memory(tmp_path):
    results = known_index.measure(300, tmp_path / "work")
    old, compact = (next(r for r in results if r["index"] == name) for name in known_index.INDEXES)
    assert old["identifiers"] == compact["identifiers"] > 1000
    assert compact["hash_bytes"] == 8 * compact["identifiers"]
    assert compact["held_bytes"] * 2 < old["held_bytes"]

    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## 1. x\n\n## Optimizations\n\nlog\n")
    for _ in range(2):
        known_index.splice(report, known_index.markdown(results))
    text = report.read_text()
    assert text.count(known_index.TITLE) == 1
    assert text.index(known_index.TITLE) < text.index("## Optimizations")
