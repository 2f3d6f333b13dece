"""One way to print a URL without the secrets it may carry.

Every URL the service shows (in ``/status``, logs and error messages: the journal, Datadog,
the WorkOS API, the OTLP endpoint, proxies) goes through ``mask_url``. It hides the password
of ``user:password@`` and the value of query parameters whose name says they are a secret
(libpq's ``password=``, ``sslpassword=``, ``api_key=``, ``token=``...), and keeps the rest
readable: scheme, user, host, port, path and the other parameters are what an operator
needs to recognise the setting.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
_SECRET_PARAMETER = re.compile(r"pass|secret|token|key|auth|signature|sig$|credential", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``.

    A value that does not parse as a URL is masked whole rather than shown.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return MASK
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret_parameters = any(_SECRET_PARAMETER.search(name) for name, _ in pairs)
    if parts.password is None and not secret_parameters:
        return url  # unchanged, byte for byte (urlunsplit would drop sqlite:///'s empty host)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{port}" if port is not None else "")
    query = parts.query
    if secret_parameters:
        masked = [(name, MASK if _SECRET_PARAMETER.search(name) else value) for name, value in pairs]
        query = urlencode(masked, safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` (an error message about ``url``) with the URL's secrets masked wherever they appear.

    Drivers quote parts of the connection string in their errors (libpq echoes an option it
    cannot parse, for one); masking the URL itself is not enough.
    """
    try:
        parts = urlsplit(url)
        secrets = [unquote(parts.password)] if parts.password else []
    except ValueError:
        return MASK
    for pair in parts.query.split("&"):
        name, _, raw = pair.partition("=")
        if _SECRET_PARAMETER.search(name) and raw:
            secrets += {raw, unquote(raw), unquote(raw.replace("+", " "))}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text.replace(url, mask_url(url))
