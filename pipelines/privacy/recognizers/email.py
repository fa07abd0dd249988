"""E-mail addresses: Presidio's recognizer, its domain check on the bundled public-suffix list (never the network)."""

from __future__ import annotations

import tldextract
from presidio_analyzer.predefined_recognizers import EmailRecognizer


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's `EmailRecognizer` whose domain check reads tldextract's bundled snapshot, never a URL."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    def validate_result(self, pattern_text: str) -> bool:
        """Presidio's check (the address has a registrable domain), offline."""
        return self._extract(pattern_text).fqdn != ""
