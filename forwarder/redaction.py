"""Keep emails and IP addresses of end users out of the log platforms, on request.

WorkOS events carry personal data (who signed in, from where). Operators who may not
ship it to Datadog or an OTLP backend set ``FORWARDER_REDACT``. In ``hash`` mode each
value becomes ``redacted:<16 hex of HMAC-SHA256(key, value)>``: a keyed hash, so the same
user still correlates across events and sinks, but nobody without the key can confirm a
guessed address (a plain hash of an email is trivially reversed by a dictionary).
``drop`` removes the values instead.

The walk covers the whole record, not just the known fields: WorkOS nests personal data
in places we do not model (``impersonator.email``, directory users' ``emails[]``, free-text
error messages), and the ``message`` line repeats the email and IP.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

RedactMode = Literal["hash", "drop"]

REDACTABLE_FIELDS = frozenset({"email", "ip"})
DROPPED = "redacted"
"""What replaces a value inside a longer string in ``drop`` mode."""

# Deliberately broad (any word character, so internationalised addresses too): a false
# positive costs a readable token, a false negative leaks an address. The lookbehind and
# the possessive "++" keep the scan linear: without them every character of a long word
# starts a new attempt (6 us instead of 2 on a typical message line).
_LOCAL_CHAR = r"[\w.!#$%&'*+/=?^`{|}~-]"
_EMAIL = re.compile(rf"(?<!{_LOCAL_CHAR}){_LOCAL_CHAR}++@(?:[\w-]+\.)+[\w-]{{2,}}")
# Candidates only; ipaddress decides. Not glued to other digits or dots (versions like 1.2.3.4.5).
# (Digit first, lookbehind second: several times faster than the other way round.)
_IPV4 = re.compile(r"\d(?<![\d.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\d|\.\d)")
# A whole run of hex digits, colons and dots with at least two colons; trimmed and confirmed
# below. The lookbehind (start only where a run starts) and the possessive quantifiers keep
# the scan linear on hostile input such as a user name of 10,000 hex digits.
_IPV6_RUN = re.compile(r"(?<![0-9A-Fa-f:.])[0-9A-Fa-f.]*+(?::[0-9A-Fa-f.]*+){2,}+")
_IPV6_MAX_LENGTH = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")

# Standard attribute groups that are meaningless once emptied by ``drop``.
_PRUNABLE = ("usr", "network", "http")
# The memo holds at most ~8192 short strings: long ones (free text) rarely repeat.
_MEMO_SIZE = 8192
_MEMO_MAX_LENGTH = 256


class Redactor:
    """Rewrites a normalized record so that no email / IP address of ``fields`` remains.

    ``apply`` returns a new record and never mutates its input: ``workos.data`` is the
    caller's event object, which may still be journaled or handed to another sink.
    """

    __slots__ = ("_emails", "_hash_value", "_ips", "_memo", "fields", "mode")

    def __init__(
        self,
        fields: frozenset[str] = REDACTABLE_FIELDS,
        mode: RedactMode = "hash",
        key: bytes | None = None,
    ) -> None:
        unknown = set(fields) - REDACTABLE_FIELDS
        if unknown:
            raise ValueError(
                f"FORWARDER_REDACT: unknown field(s) {', '.join(sorted(unknown))}; "
                f"use a comma-separated subset of {', '.join(sorted(REDACTABLE_FIELDS))}"
            )
        if mode not in ("hash", "drop"):
            raise ValueError(f"FORWARDER_REDACT_MODE: {mode!r} is not a mode; use 'hash' or 'drop'")
        if mode == "hash" and not key:
            raise ValueError(
                "FORWARDER_REDACT_KEY is required when FORWARDER_REDACT_MODE=hash: set it to a long random "
                "secret (e.g. `openssl rand -hex 32`) and keep it stable so hashes keep correlating"
            )
        self.fields = frozenset(fields)
        self.mode = mode
        self._emails = "email" in self.fields
        self._ips = "ip" in self.fields
        self._hash_value = _keyed_hasher(key) if mode == "hash" and key else None
        self._memo: dict[str, Any] = {}

    def __repr__(self) -> str:
        # Never show the key.
        return f"Redactor(fields={sorted(self.fields)}, mode={self.mode!r})"

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with every configured email / IP hashed or removed, at any depth."""
        out = self._walk(record)
        if self.mode == "drop":
            for group in _PRUNABLE:
                if group in out and not _has_leaf(out[group]):
                    del out[group]
        return out

    def _walk(self, value: Any) -> Any:
        cls = type(value)
        if cls is str:
            return self._scrub_value(value)
        if cls is dict:
            # Inlined memo hits and scalars: the walk visits ~90 strings per record (keys
            # included) and a function call for each would be most of its cost.
            memo, scrub, out = self._memo, self._scrub_value, {}
            for key, item in value.items():
                kind = type(item)
                if kind is str:
                    item = memo.get(item) or scrub(item)
                    if item is _REMOVE:
                        continue
                elif kind is dict or kind is list or kind is tuple:
                    item = self._walk(item)
                if type(key) is str:
                    key = memo.get(key) or scrub(key)
                    if key is _REMOVE:  # a key that is an address, in drop mode
                        key = DROPPED
                out[key] = item
            return out
        if cls is list or cls is tuple:
            return [item for item in map(self._walk, value) if item is not _REMOVE]
        return value

    def _scrub_value(self, value: str) -> Any:
        """A string value scrubbed, or ``_REMOVE`` when ``drop`` mode deletes it whole."""
        # Memoised: keys, user agents, emails, IPs and types repeat in every record, and the
        # regex scans are what redaction costs. Cleared when full, not LRU: cheaper and enough.
        memo = self._memo
        result = memo.get(value)
        if result is None:
            result = self._scrub(value)
            if result is not value and self.mode == "drop" and result.strip() == DROPPED:
                # The whole value was an address: remove the key rather than keep a placeholder.
                result = _REMOVE
            if len(value) <= _MEMO_MAX_LENGTH:
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[value] = result
        return result

    def _scrub(self, text: str) -> str:
        """``text`` with addresses replaced; the same object when there was nothing to do."""
        # Cheap pre-checks first: almost every string in an event has no address at all.
        if self._emails and "@" in text:
            text = _EMAIL.sub(self._replace_email, text)
        if self._ips:
            if text.count(".") >= 3:
                text = _IPV4.sub(self._replace_ipv4, text)
            # An IPv6 address has "::" or at least six colons (seven, or six + embedded IPv4).
            if "::" in text or text.count(":") >= 6:
                text = _IPV6_RUN.sub(self._replace_ipv6, text)
        return text

    def _replacement(self, canonical: str) -> str:
        return DROPPED if self._hash_value is None else self._hash_value(canonical)

    def _replace_email(self, match: re.Match[str]) -> str:
        # Lower-cased so that User@Example.com and user@example.com stay the same user.
        return self._replacement(match.group().lower())

    def _replace_ipv4(self, match: re.Match[str]) -> str:
        start, text = match.start(), match.string
        if start >= 2 and text[start - 1] == "/" and text[start - 2].isalpha():
            # A product version in a user agent ("Chrome/124.0.0.0"), not an address.
            return match.group()
        canonical = _canonical_ipv4(match.group())
        return match.group() if canonical is None else self._replacement(canonical)

    def _replace_ipv6(self, match: re.Match[str]) -> str:
        run = match.group()
        after = match.string[match.end() : match.end() + 1]
        if after.isalpha() or after == "_":
            # The token goes on with letters ("Foo::Bar"): an identifier, not an address.
            return run
        core = run.rstrip(".")
        # The run may include a separator colon before ("ip:2001:db8::1") or a port or a
        # separator after ("2001:db8::1: reset", "::1:::80"): try the whole run, then without
        # a leading colon, then shorter prefixes cut at each colon. Only within the length
        # of the longest address: a long run of colons must not cost quadratic time.
        window = core[: _IPV6_MAX_LENGTH + 1]
        ends = [len(core)] if len(core) == len(window) else []
        ends += [i for i in range(len(window) - 1, 1, -1) if window[i] == ":"]
        for start in (0, 1) if core.startswith(":") else (0,):
            for end in ends:
                canonical = _canonical_ipv6(core[start:end])
                if canonical is not None:
                    return f"{core[:start]}{self._replacement(canonical)}{run[end:]}"
        return run


class _Remove:
    """Marker returned by the walk for a value that ``drop`` mode deletes."""


_REMOVE = _Remove()


def _keyed_hasher(key: bytes) -> Callable[[str], str]:
    base = hmac.new(key, digestmod=hashlib.sha256)

    # The same address shows up several times per record (usr.email, message, data.email)
    # and across consecutive events of one user: cache the digests.
    @lru_cache(maxsize=4096)
    def hash_value(canonical: str) -> str:
        mac = base.copy()
        mac.update(canonical.encode())
        return f"redacted:{mac.hexdigest()[:16]}"

    return hash_value


@lru_cache(maxsize=4096)
def _canonical_ipv4(candidate: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(candidate))
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _canonical_ipv6(candidate: str) -> str | None:
    # Compressed lower-case form, so 2001:DB8::1 and 2001:db8:0::1 hash alike.
    try:
        return ipaddress.IPv6Address(candidate).compressed
    except ValueError:
        return None


def _has_leaf(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_leaf(v) for v in value.values())
    return True
