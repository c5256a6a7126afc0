"""Keep credentials out of error messages, reprs and logs.

Two layers: every secret value the caller gave (or the environment supplied)
is replaced wherever it appears, and well-known credential shapes that a
store library may echo back (signed-URL parameters, Azure connection-string
keys, ``Authorization`` headers) are masked even when their value is unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

# Wire-map keys (also inside ``storage_options``) whose values are secrets.
SECRET_KEYS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "token",
        "key",
        "secret",
        "password",
        "account_key",
        "sas_token",
        "sas_key",
        "connection_string",
        "service_account_key",
        "credentials",
        "client_secret",
        "bearer_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "azure_storage_account_key",
        "azure_storage_sas_token",
        "google_service_account_key",
    }
)

_PATTERNS = [
    # Signed-URL query parameters (S3 presigned, Azure SAS, GCS signed URLs).
    re.compile(
        r"(?i)((?:X-Amz-(?:Signature|Credential|Security-Token)|X-Goog-(?:Signature|Credential)|sig|se|sv|sp|skoid|sktid)=)[^&\s\"'<>]+"
    ),
    # Connection-string style ``AccountKey=...;`` / ``SharedAccessSignature=...``.
    re.compile(r"(?i)((?:AccountKey|SharedAccessSignature|SharedAccessKey)=)[^;\s\"']+"),
    # HTTP authorization headers as a library may print them.
    re.compile(r"(?i)(\bAuthorization[\"']?\s*[:=]\s*[\"']?)[^\"'\n,}]+"),
    # ``key='value'`` / ``"key": "value"`` pairs for secret keys in reprs.
    re.compile(
        r"(?i)([\"']?(?:aws_)?(?:secret_access_key|access_key_id|session_token|account_key|sas_token|"
        r"client_secret|bearer_token|password)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}]+"
    ),
]


def secret_values(mapping: Mapping[str, Any]) -> list[str]:
    """The secret values in a (nested) wire map, by key name."""
    found: list[str] = []
    for name, value in mapping.items():
        if isinstance(value, Mapping):
            found.extend(secret_values(value))
        elif name.lower() in SECRET_KEYS and isinstance(value, str) and value:
            found.append(value)
    return found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret and every known credential shape masked."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


def redacted_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a wire map with secret values replaced by ``***`` (for reprs and logs)."""
    out: dict[str, Any] = {}
    for name, value in mapping.items():
        if isinstance(value, Mapping):
            out[name] = redacted_map(value)
        elif name.lower() in SECRET_KEYS and value is not None:
            out[name] = MASK
        elif isinstance(value, str):
            out[name] = redact(value)
        else:
            out[name] = value
    return out
