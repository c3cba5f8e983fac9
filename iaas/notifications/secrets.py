"""Webhook signing secrets at rest: encrypted with Fernet keys from the environment
(IAAS_SECRET_KEYS), because the app must use them again to sign (ARCHITECTURE.md); a
secret the app only checks would be hashed instead. MultiFernet decrypts with any listed
key and encrypts with the first, so keys rotate without downtime (`rotate_secret_keys`)."""

from __future__ import annotations

import base64
import hashlib
import secrets as random

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings

SECRET_PREFIX = "whsec_"  # noqa: S105 (the form of a secret, not one)
SECRET_BYTES = 32  # Standard Webhooks: between 24 and 64 bytes


def new_webhook_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: ``whsec_`` and base64."""
    return SECRET_PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def _keys() -> list[bytes]:
    keys = [key.encode() for key in settings.IAAS_SECRET_KEYS if key]
    if keys:
        return keys
    # Development and tests only (production refuses to start without IAAS_SECRET_KEYS):
    # a key derived from SECRET_KEY, so secrets stay readable across restarts.
    digest = hashlib.sha256(b"iaas.notifications.secrets:" + settings.SECRET_KEY.encode()).digest()
    return [base64.urlsafe_b64encode(digest)]


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in _keys()])


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def reencrypt(token: str) -> str:
    """The same secret under the first (newest) key."""
    return _fernet().rotate(token.encode()).decode()
