"""The analyzer is built from its configuration files (pipelines/privacy/conf/, Presidio's formats), issue 19: what
a steward reads there is what runs, and an edit there changes what is detected."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from presidio_analyzer import EntityRecognizer
from presidio_analyzer.recognizer_registry.recognizers_loader_utils import RecognizerListLoader

from pipelines.privacy import analyzer as an
from pipelines.privacy import speedups

CONF = an.CONF_DIR


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONF / name).read_text(encoding="utf-8"))


def _enabled(registry: dict) -> list[dict]:
    return [r for r in registry["recognizers"] if r.get("enabled", True)]


@pytest.fixture(scope="module")
def analyzer():
    return an.get_analyzer()


@pytest.mark.parametrize("use_speedups", [True, False], ids=["speedups", "stock"])
def test_the_registry_runs_exactly_the_recognizers_the_yaml_enables(use_speedups):
    analyzer = an.get_analyzer(use_speedups=use_speedups)
    listed = _enabled(_yaml("recognizers.yaml"))
    assert sorted(r.name for r in analyzer.registry.recognizers) == sorted(r["name"] for r in listed)
    by_name = {r.name: r for r in analyzer.registry.recognizers}
    for conf in listed:
        recognizer = by_name[conf["name"]]
        expected = conf.get("class_name") or conf["name"] if conf.get("type") == "predefined" else "PatternRecognizer"
        if use_speedups:
            expected = an.SPEEDUP_CLASSES.get(expected, expected)
        assert type(recognizer).__name__ == expected
        assert (recognizer.context or None) == conf.get("context"), conf["name"]
        if "patterns" in conf:
            assert [(p.name, p.regex, p.score) for p in recognizer.patterns] == [
                (p["name"], p["regex"], p["score"]) for p in conf["patterns"]
            ]
    phone = by_name["PhoneRecognizer"]
    assert isinstance(phone, speedups.RememberingPhoneRecognizer) is use_speedups


def test_every_class_the_registry_names_is_one_recognizer_class():
    """Presidio finds a predefined recognizer by class name among all EntityRecognizer subclasses: a name two classes
    share would make the choice arbitrary."""
    classes = RecognizerListLoader.get_all_existing_recognizers(EntityRecognizer)
    for conf in _yaml("recognizers.yaml")["recognizers"]:
        if conf.get("type") == "predefined":
            name = conf.get("class_name") or conf["name"]
            assert [c.__name__ for c in classes].count(name) == 1, name
    for name in an.SPEEDUP_CLASSES.values():
        assert [c.__name__ for c in classes].count(name) == 1, name


def test_model_mapping_threshold_and_context_come_from_the_yaml(analyzer):
    nlp, settings = _yaml("nlp.yaml"), _yaml("analyzer.yaml")
    assert an.DEFAULT_NLP_MODEL == nlp["models"][0]["model_name"]
    assert analyzer.nlp_engine.models == [{"lang_code": "en", "model_name": an.DEFAULT_NLP_MODEL}]
    ner = analyzer.nlp_engine.ner_model_configuration
    assert ner.model_to_presidio_entity_mapping == nlp["ner_model_configuration"]["model_to_presidio_entity_mapping"]
    assert list(ner.labels_to_ignore) == nlp["ner_model_configuration"]["labels_to_ignore"]
    assert an.DEFAULT_SCORE_THRESHOLD == analyzer.default_score_threshold == settings["default_score_threshold"]
    enhancer = analyzer.context_aware_enhancer
    for key, value in settings["context_aware_enhancer"].items():
        assert getattr(enhancer, key) == value


def test_an_edit_to_the_registry_yaml_changes_what_is_detected(tmp_path):
    registry = _yaml("recognizers.yaml")
    for conf in registry["recognizers"]:
        if conf["name"] == "TicketIdRecognizer":
            conf["enabled"] = False
        if conf["name"] == "ClaimIdRecognizer":
            conf["context"] = ["reclamation"]
    registry["recognizers"].append(
        {
            "name": "BadgeIdRecognizer",
            "supported_entity": "BADGE_ID",
            "patterns": [{"name": "badge (BDG + 5 digits)", "regex": r"\bBDG\d{5}\b", "score": 0.2}],
            "context": ["badge"],
        }
    )
    path = tmp_path / "recognizers.yaml"
    path.write_text(yaml.safe_dump(registry), encoding="utf-8")
    edited = an.get_analyzer(recognizers_path=path)
    assert edited is not an.get_analyzer()

    def found(analyzer, text):
        return {(r.entity_type, text[r.start : r.end]) for r in an.scan_texts_with(analyzer, [text], n_process=1)[0]}

    text = "See ticket TCK-0012345 about badge BDG12345."
    assert ("TICKET_ID", "TCK-0012345") in found(an.get_analyzer(), text)
    assert ("BADGE_ID", "BDG12345") in found(edited, text)  # scores 0.2: lifted by its context word
    assert "TICKET_ID" not in {entity for entity, _ in found(edited, text)}
    unrelated = "The list BDG54321 was printed on Monday morning for everyone."
    assert "BADGE_ID" not in {entity for entity, _ in found(edited, unrelated)}  # no context word: under 0.4
    # the new identifier's context word is a cue for NER as well (an *_ID entity)
    ner = next(r for r in edited.registry.recognizers if isinstance(r, an.FilteredSpacyRecognizer))
    assert ner.identifier_cues["BADGE_ID"] == frozenset({"badge"})
    assert ner.identifier_cues["CLAIM_ID"] == frozenset({"reclamation"})


def test_a_ner_recognizer_must_ask_for_entities_the_nlp_configuration_gives(analyzer):
    configuration = an.read_configuration()
    registry = dict(configuration.registry)
    registry["recognizers"] = [
        {**r, "supported_entities": ["PERSON", "ORGANIZATION"]} if r["name"] == "FilteredSpacyRecognizer" else r
        for r in registry["recognizers"]
    ]
    with pytest.raises(ValueError, match="ORGANIZATION"):
        an.build_registry(dataclasses.replace(configuration, registry=registry), analyzer.nlp_engine)


def test_the_analyzer_yaml_must_name_the_supported_language(tmp_path):
    settings = _yaml("analyzer.yaml")
    settings["supported_languages"] = ["de"]
    path = tmp_path / "analyzer.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    with pytest.raises(ValueError, match="supports"):
        an.read_configuration(analyzer_path=path)


@pytest.mark.parametrize("section", ["nlp_configuration", "recognizer_registry"])
def test_the_nlp_and_registry_sections_stay_in_their_files(tmp_path, section):
    settings = _yaml("analyzer.yaml")
    settings[section] = _yaml("nlp.yaml" if section == "nlp_configuration" else "recognizers.yaml")
    path = tmp_path / "analyzer.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    with pytest.raises(ValueError, match=section):
        an.read_configuration(analyzer_path=path)
