"""Secrets at rest: every stored secret value is a Fernet token (AES-128-CBC + HMAC-SHA256).

Keys come from ``STAGELINE_SECRET_KEYS`` (comma-separated Fernet keys): the first encrypts,
all of them decrypt, so a key is rotated by putting a new one first, running
``manage.py reencrypt_secrets`` and then dropping the old one. Without the variable (the
embedded default) the key lives in ``$STAGELINE_VAR_DIR/secret.key``, created with mode 0600 the
first time a secret is stored or read; every process on the machine reads the same file.

Only values are encrypted; the names of secret inputs stay readable (forms show "set").
A token that no key opens raises ``SecretKeyError`` with a message that says what to check,
never the key or the value.
"""

from __future__ import annotations

import hmac
import os
import tempfile
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.signals import setting_changed

KEY_FILE_NAME = "secret.key"


class SecretKeyError(RuntimeError):
    """The secret keys are missing or malformed, or none of them opens a stored secret."""


def generate_key() -> str:
    """A new random key, in the form ``STAGELINE_SECRET_KEYS`` expects."""
    return Fernet.generate_key().decode()


def key_file() -> Path:
    return Path(settings.VAR_DIR) / KEY_FILE_NAME


def _parse(keys: list[str], source: str) -> list[Fernet]:
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError):
            raise SecretKeyError(
                f"key {position} of {source} is not a Fernet key (32 url-safe base64-encoded "
                "bytes; make one with `manage.py reencrypt_secrets --new-key`)"
            ) from None
    if not fernets:
        raise SecretKeyError(f"{source} holds no key")
    return fernets


def _read_or_create_key_file(path: Path) -> str:
    """The key in ``path``; the file is created (mode 0600, atomically) when it is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".secret-key-", dir=path.parent)  # mode 0600
        try:
            os.write(fd, (generate_key() + "\n").encode())
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(temporary, path)  # fails if another process created it first
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}") from None


@lru_cache(maxsize=1)
def _fernet() -> tuple[MultiFernet, Fernet]:
    """(all keys, the newest key). Cached: call ``forget_keys()`` after changing the settings."""
    configured = list(getattr(settings, "STAGELINE_SECRET_KEYS", []) or [])
    if configured:
        fernets = _parse(configured, "STAGELINE_SECRET_KEYS")
    else:
        path = key_file()
        fernets = _parse([_read_or_create_key_file(path)], str(path))
    return MultiFernet(fernets), fernets[0]


def forget_keys() -> None:
    """Read the keys again on next use (tests, and after a settings change)."""
    _fernet.cache_clear()


def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"STAGELINE_SECRET_KEYS", "VAR_DIR"}:
        forget_keys()


setting_changed.connect(_settings_changed)


def encrypt(value: str) -> str:
    """``value`` as a token, under the newest key."""
    return _fernet()[0].encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    """The value of a token made by ``encrypt`` under any configured key."""
    try:
        return _fernet()[0].decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeEncodeError, AttributeError):
        raise SecretKeyError(
            "a stored secret cannot be decrypted with any key of STAGELINE_SECRET_KEYS (or the "
            "key file): the key it was encrypted with is missing, or the value was not encrypted "
            "by Stageline"
        ) from None


def is_current(token: str) -> bool:
    """Whether the newest key opens ``token`` (nothing to re-encrypt)."""
    try:
        _fernet()[1].decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError, AttributeError):
        return False
    return True


def reencrypt(token: str) -> str:
    """``token`` under the newest key (``SecretKeyError`` when no key opens it)."""
    return encrypt(decrypt(token))


def same_secret(candidate: str, token: str) -> bool:
    """Whether ``candidate`` is the value stored in ``token``, compared in constant time."""
    return hmac.compare_digest(candidate.encode("utf-8"), decrypt(token).encode("utf-8"))


class SealedValues(Mapping[str, str]):
    """Secret values by name as stored (tokens); a value is decrypted only when it is read.

    Names can be listed (``"x" in sealed``, ``sorted(sealed)``) without any key.
    """

    def __init__(self, tokens: Mapping[str, str]):
        self.tokens = dict(tokens)

    @classmethod
    def seal(cls, values: Mapping[str, str]) -> SealedValues:
        if isinstance(values, SealedValues):
            return values
        return cls({name: encrypt(str(value)) for name, value in values.items()})

    def __getitem__(self, name: str) -> str:
        return decrypt(self.tokens[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, name: object) -> bool:
        return name in self.tokens

    def matches(self, name: str, candidate: str) -> bool:
        """Whether ``candidate`` is the stored value of ``name`` (constant-time comparison)."""
        token = self.tokens.get(name)
        return token is not None and same_secret(candidate, token)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):  # two tokens of one value differ: compare the values
            return dict(self) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"SealedValues({sorted(self.tokens)})"
