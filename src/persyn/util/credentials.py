"""What counts as a secret (a credential), in one place: the store refuses a config that holds one
(`find_secrets`), and the data card and the report redact anything that looks like one
(`scrub_secrets`), a second line of defence.

A config names environment variables (`api_key_env: OPENAI_API_KEY`, a variable *name*), never
keys. Keys whose string value would be a credential: `api_key`, `hf_token`, `client_secret`,
`password`, `authorization`...; `api_key_env`, `max_new_tokens` and `prompt_tokens` are not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "find_secrets", "scrub_secrets"]

REDACTED = "<redacted>"

SECRET_KEY = re.compile(
    r"(^|[_\-])(api_?key|apikey|secret|password|passwd|token|access_?key|auth|authorization|"
    r"bearer|credentials?|private_?key|cookie)$",
    re.IGNORECASE,
)
# Values that look like a credential wherever they sit (OpenAI, HF, GitHub, Slack, AWS, bearer headers).
SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16}|Bearer\s+[A-Za-z0-9._\-]{8,})"
)
# user:password@ inside a URL.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s:]+:[^/@\s]+@")


def find_secrets(value: Any, where: str = "") -> list[str]:
    """The key paths (`teachers[0].api_key`) of `value` whose key names a secret and whose value
    is a non-empty string."""
    found = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            path = f"{where}.{k}" if where else str(k)
            if isinstance(v, str) and v and SECRET_KEY.search(str(k)):
                found.append(path)
            else:
                found.extend(find_secrets(v, path))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found.extend(find_secrets(v, f"{where}[{i}]"))
    return found


def scrub_secrets(value: Any) -> Any:
    """A deep copy of `value` with anything that looks like a credential replaced by '<redacted>';
    plain data only (mappings -> dict, sequences -> list, other objects -> their text)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if SECRET_KEY.search(str(k)) and v not in (None, "", [], {}) and not isinstance(v, bool):
                out[k] = REDACTED
            else:
                out[k] = scrub_secrets(v)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_secrets(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return scrub_secrets(value.item())
        except (TypeError, ValueError):
            pass
    # Anything else (paths, enums) as text, so that the result always dumps as YAML or JSON.
    text = value if isinstance(value, str) else str(value)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return SECRET_VALUE.sub(REDACTED, text)
