"""The development credentials committed in infra/k8s: a service that runs with one says so, loudly.

Every committed password and token (infra/k8s/05-secret.yaml, infra/k8s/07-tokens.yaml) has the form
`numcast-dev-<what>-change-me`, so that a value of that form is a development value wherever it comes from: an
env var, a mounted file (`*_FILE`), or the password in `REDIS_URL`. A service started with one logs a WARNING,
names it in /readyz (`development_credentials`), and shows a banner on its page.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MARKER_RE = re.compile(r"numcast-dev-[a-z0-9-]+-change-me")
MAX_READ = 4096  # a credential file is a few dozen bytes; a bigger one is not ours to judge here


def is_development(value: str) -> bool:
    """True if `value` is one of the committed development credentials (by their marker)."""
    return MARKER_RE.fullmatch(value.strip()) is not None


def found(settings) -> tuple[str, ...]:
    """The env vars of `settings` that hold, or name a file holding, a development credential."""
    names = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if not f.metadata.get("secret") or not value:
            continue
        if f.metadata["env"].endswith("_FILE"):
            try:
                with open(value, "rb") as file:
                    value = file.read(MAX_READ).decode("utf-8", "replace")
            except OSError:
                continue  # the service's own start-up check reports an unreadable file
        if is_development(value):
            names.append(f.metadata["env"])
    url = getattr(settings, "redis_url", "")
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password and is_development(unquote(password)):
        names.append("REDIS_URL")
    return tuple(names)


def warn(names: tuple[str, ...]) -> None:
    """Log, at start, that the service runs with development credentials (nothing when `names` is empty)."""
    if names:
        log.warning(
            "DEVELOPMENT CREDENTIALS in use settings=%s: they are committed in infra/k8s and anyone can read them; "
            "replace them before anyone else can reach this cluster (docs/security.md)",
            ",".join(names),
        )
