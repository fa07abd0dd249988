"""Keys come from the environment or an owner-only key file; only the fingerprint is shown."""

import os
import stat

import pytest

from pipelines.privacy.keys import KeyError_, load_key


def test_env_key_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("T_KEY", "s" * 40)
    key = load_key("T_KEY", tmp_path / "k")
    assert key.source == "env:T_KEY" and not (tmp_path / "k").exists()
    assert "s" * 40 not in repr(key) and "s" * 40 not in str(key)


def test_key_file_created_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv("T_KEY", raising=False)
    first = load_key("T_KEY", tmp_path / "keys" / "k")
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "k").st_mode) == 0o600
    assert load_key("T_KEY", tmp_path / "keys" / "k").key_id == first.key_id


def test_short_or_exposed_keys_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("T_KEY", "short")
    with pytest.raises(KeyError_, match="at least 32"):
        load_key("T_KEY", tmp_path / "k")
    monkeypatch.delenv("T_KEY")
    path = tmp_path / "k"
    path.write_text("x" * 64)
    path.chmod(0o644)
    with pytest.raises(KeyError_, match="chmod 600"):
        load_key("T_KEY", path)
