"""Phone numbers: Presidio's phonenumbers-based recognizer, skipped on texts with too few digits to hold one."""

from __future__ import annotations

import phonenumbers
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import PhoneRecognizer


class PrefilteredPhoneRecognizer(PhoneRecognizer):
    """Presidio's `PhoneRecognizer`, skipped on texts too short in digits to hold a number."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # No valid number in any supported region has fewer digits than this (exact pre-filter).
        self.min_digits = min(
            min(phonenumbers.PhoneMetadata.metadata_for_region(region).general_desc.possible_length)
            for region in self.supported_regions
        )

    def has_enough_digits(self, text: str) -> bool:
        return sum(c.isdigit() for c in text) >= self.min_digits

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if not self.has_enough_digits(text):
            return []
        return super().analyze(text, entities, nlp_artifacts)
