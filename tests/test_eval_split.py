"""The eval-pii split (tuning / held-out by template) and its subsets."""

from __future__ import annotations

import json

from bench import eval_pii as ev


def test_split_is_a_stable_hash_of_the_template_id():
    assert [ev.split_half(t) for t in (0, 1, 2, 3, 41, 209)] == [ev.split_half(str(t)) for t in (0, 1, 2, 3, 41, 209)]
    halves = {ev.split_half(t) for t in range(200)}
    assert halves == {"held_out", "tuning"}
    # pinned: the split must never move silently (it decides what detection may be tuned on)
    assert [ev.split_half(t) for t in range(8)] == [
        "held_out",
        "held_out",
        "tuning",
        "tuning",
        "held_out",
        "held_out",
        "held_out",
        "held_out",
    ]


def test_lowercased_keeps_offsets():
    assert ev.lowercased("Jane DOE") == "jane doe"
    text = "İstanbul, Jane"  # 'İ'.lower() is two characters: left as it is
    low = ev.lowercased(text)
    assert len(low) == len(text) and low.endswith("jane")


def test_subsets_of_a_half(tmp_path):
    rows = []
    for template in range(12):
        rows.append(
            {
                "full_text": f"My name is John Smith {template}",
                "template_id": template,
                "spans": [
                    {"entity_type": "PERSON", "entity_value": "John Smith", "start_position": 11, "end_position": 21}
                ],
            }
        )
        rows.append({"full_text": "call me later", "template_id": template, "spans": []})
    sets = ev.subsets(rows, "held_out")
    held = [r for r in rows if ev.split_half(r["template_id"]) == "held_out"]
    assert len(sets["all"]) == len(held) == len(sets["lowercased copy"])
    assert len(sets["cased"]) + len(sets["written lower-case"]) == len(held)
    lower = sets["lowercased copy"][0]
    assert lower.text == lower.text.lower() and lower.gold == sets["all"][0].gold  # gold spans unchanged
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    assert len(ev.load_records(path)) == len(rows)
