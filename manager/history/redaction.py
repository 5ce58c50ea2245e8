"""URLs that may be credentials (a Slack or Teams webhook URL is one), as the history, the events
and the pages show them: scheme, host and port, and a hash of the whole URL to tell two apart, never
the path, the query or a user:password. A leaf module: the registry and the policy both use it."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

# An http(s) URL in a policy's YAML text: up to the first blank, quote or YAML flow delimiter.
URL = re.compile(r"https?://[^\s'\"{}\[\],]+")


def shown(target: str) -> str:
    """A URL without its path, query or credentials; an `env:`/`file:` reference as is."""
    if target.startswith(("env:", "file:")):
        return f"from {target}"
    parts = urlsplit(target)
    digest = hashlib.sha256(target.encode()).hexdigest()[:12]
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…#sha256:{digest}"


def redact_urls(text: str) -> str:
    """Every http(s) URL in `text` (a policy's only ones are its hooks') in its shown form."""
    return URL.sub(lambda m: shown(m.group(0)), text)
