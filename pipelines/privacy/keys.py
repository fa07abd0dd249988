"""Secret keys for pseudonyms and break-glass encryption: from the environment or a local key file.

Only a key's id (a fingerprint) ever leaves this module's callers; the key itself is never logged,
stored in metadata, or placed in an error message.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

MIN_KEY_BYTES = 32


class KeyError_(RuntimeError):
    """A key is missing, too short or stored unsafely."""


@dataclass(frozen=True)
class SecretKey:
    """A secret with a public id; `repr` never shows the secret."""

    key_id: str
    source: str  # "env:NAME" or "file:<path>"
    secret: bytes = field(repr=False)

    def __str__(self) -> str:
        return f"SecretKey(id={self.key_id}, source={self.source})"


def fingerprint(secret: bytes) -> str:
    """Public id of a key: a hash that cannot be turned back into the key."""
    return "k-" + hashlib.sha256(b"pipelines-key-id\x00" + secret).hexdigest()[:12]


def _check_length(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_KEY_BYTES:
        raise KeyError_(f"the key from {where} is {len(secret)} bytes; at least {MIN_KEY_BYTES} are required")
    return secret


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyError_(f"key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    return _check_length(path.read_text(encoding="utf-8").strip().encode("utf-8"), f"file {path}")


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    # Written whole under a private name, then linked into place: a racing process sees either no key file or
    # a complete one (never an empty file), and link fails if another run created the key first.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def key_from_secret(value: str, source: str) -> SecretKey:
    """A key given as a value (a Dagster resource's `dg.EnvVar`, resolved when the run starts)."""
    secret = _check_length(value.strip().encode("utf-8"), source)
    return SecretKey(fingerprint(secret), source, secret)


def load_key(env_var: str, key_file: Path, *, create: bool = True) -> SecretKey:
    """The key from `env_var` if set, else from `key_file` (created with owner-only access if absent)."""
    value = os.environ.get(env_var)
    if value:
        secret = _check_length(value.strip().encode("utf-8"), f"${env_var}")
        return SecretKey(fingerprint(secret), f"env:{env_var}", secret)
    if not key_file.exists():
        if not create:
            raise KeyError_(f"no key: set ${env_var} or create {key_file}")
        try:
            _create_key_file(key_file)
        except FileExistsError:
            pass
    secret = _read_key_file(key_file)
    return SecretKey(fingerprint(secret), f"file:{key_file}", secret)
