"""Redaction: with FORWARDER_REDACT set, no end-user email or IP address leaves the forwarder."""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder.normalize import NormalizeOptions, normalize
from forwarder.redaction import Redactor
from tests.samples import (
    EMAIL,
    EMAILS,
    IMPERSONATOR_EMAIL,
    IP,
    IPS,
    IPV6,
    OTHER_EMAIL,
    SAMPLES,
    USER_AGENT,
    USER_ID,
    make_event,
)

KEY = b"k" * 32
HASHING = Redactor(frozenset({"email", "ip"}), "hash", KEY)
DROPPING = Redactor(frozenset({"email", "ip"}), "drop", None)
HASH_SHAPE = re.compile(r"redacted:[0-9a-f]{16}")
# Any address from the documentation ranges the samples use, in any spelling.
LEAK = re.compile(r"@example\.(com|org)|203\.0\.113\.|198\.51\.100\.|2001:db8", re.IGNORECASE)


def expected_hash(value: str, key: bytes = KEY) -> str:
    return f"redacted:{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]}"


def redacted(name: str, redactor: Redactor) -> dict[str, Any]:
    return normalize(SAMPLES[name], NormalizeOptions(redaction=redactor))


@pytest.mark.parametrize("redactor", [HASHING, DROPPING], ids=["hash", "drop"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_no_email_or_ip_is_left_anywhere(name: str, redactor: Redactor) -> None:
    serialized = orjson.dumps(redacted(name, redactor)).decode()
    assert not LEAK.search(serialized), LEAK.search(serialized)
    for value in EMAILS | IPS:
        assert value.lower() not in serialized.lower()
    assert "@" not in serialized


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_redaction_keeps_everything_else(name: str) -> None:
    plain = normalize(SAMPLES[name], NormalizeOptions())
    for record in (redacted(name, HASHING), redacted(name, DROPPING)):
        for key in ("ddsource", "service", "ddtags", "status", "date", "evt", "error"):
            if key != "error" or "@" not in str(plain.get("error")):
                assert record.get(key) == plain.get(key), key
        assert record.get("http") == plain.get("http")  # the user agent is not personal data here
        assert {k: v for k, v in record["workos"].items() if k not in ("data", "context", "actor")} == {
            k: v for k, v in plain["workos"].items() if k not in ("data", "context", "actor")
        }
        assert record.get("usr", {}).get("id") == plain.get("usr", {}).get("id")


def test_hash_mode_replaces_each_value_with_a_keyed_hash_that_correlates() -> None:
    record = redacted("sso_failed", HASHING)
    email_hash, ip_hash = expected_hash(EMAIL), expected_hash(IP)
    assert record["usr"] == {"email": email_hash}
    assert record["network"] == {"client": {"ip": ip_hash}}
    assert record["workos"]["data"]["email"] == email_hash
    assert record["workos"]["data"]["ip_address"] == ip_hash
    assert (
        record["message"]
        == f"authentication.sso_failed for {email_hash} from {ip_hash}: invalid_saml_response"
    )
    assert record["error"]["message"] == (
        f"SAML response for {email_hash} from {expected_hash('198.51.100.23')} failed signature validation."
    )
    # The same user in another event, another sink, tomorrow: the same hash.
    assert redacted("password_succeeded", HASHING)["usr"]["email"] == email_hash
    assert (
        Redactor(frozenset({"email", "ip"}), "hash", KEY).apply(
            normalize(SAMPLES["sso_failed"], NormalizeOptions())
        )
        == record
    )


def test_hashes_ignore_case_and_ipv6_spelling() -> None:
    record = redacted("oauth_failed", HASHING)
    assert record["usr"]["email"] == expected_hash(OTHER_EMAIL.lower())
    upper = make_event("authentication.oauth_succeeded")
    upper["data"].update(email=EMAIL.upper(), ip_address="2001:DB8:85A3:0:0:8A2E:370:7334")
    assert normalize(upper, NormalizeOptions(redaction=HASHING))["usr"]["email"] == expected_hash(EMAIL)
    assert normalize(upper, NormalizeOptions(redaction=HASHING))["network"]["client"]["ip"] == expected_hash(
        IPV6
    )


def test_another_key_gives_other_hashes() -> None:
    other = Redactor(frozenset({"email", "ip"}), "hash", b"another key of 32 bytes........")
    mine, theirs = redacted("password_failed", HASHING), redacted("password_failed", other)
    assert mine["usr"]["email"] != theirs["usr"]["email"]
    assert mine["network"]["client"]["ip"] != theirs["network"]["client"]["ip"]
    assert HASH_SHAPE.fullmatch(theirs["usr"]["email"])


def test_drop_mode_removes_values_and_empty_groups() -> None:
    record = redacted("password_failed", DROPPING)
    assert "usr" not in record
    assert "network" not in record
    assert "email" not in record["workos"]["data"]
    assert "ip_address" not in record["workos"]["data"]
    assert record["workos"]["data"]["user_agent"] == USER_AGENT
    assert (
        record["message"] == "authentication.password_failed for redacted from redacted: invalid_credentials"
    )

    user = redacted("password_succeeded", DROPPING)
    assert user["usr"] == {"id": USER_ID}


def test_drop_mode_reaches_nested_objects_lists_and_free_text() -> None:
    directory_user = redacted("dsync_user_created", DROPPING)["workos"]["data"]
    assert directory_user["emails"] == [{"primary": True, "type": "work"}]
    assert directory_user["raw_attributes"]["emails"] == [{"primary": True}]
    assert "username" not in directory_user
    assert "manager_email" not in directory_user["custom_attributes"]

    session = redacted("session_created", DROPPING)["workos"]["data"]
    assert session["impersonator"] == {"reason": "Ticket 4821: redacted cannot log in"}

    user_updated = redacted("user_updated", DROPPING)["workos"]["context"]
    assert user_updated["previous_attributes"] == {"email_verified": False}

    hashed = redacted("session_created", HASHING)["workos"]["data"]["impersonator"]
    assert hashed["email"] == expected_hash(IMPERSONATOR_EMAIL)


def test_a_list_of_bare_addresses_loses_its_elements() -> None:
    event = make_event("user.updated", data={"id": USER_ID, "emails": [EMAIL, OTHER_EMAIL], "note": "ok"})
    record = normalize(event, NormalizeOptions(redaction=DROPPING))
    assert record["workos"]["data"] == {"id": USER_ID, "emails": [], "note": "ok"}


@pytest.mark.parametrize(
    ("fields", "kept", "gone"),
    [(frozenset({"email"}), IP, EMAIL), (frozenset({"ip"}), EMAIL, IP)],
)
def test_only_the_configured_fields_are_redacted(fields: frozenset[str], kept: str, gone: str) -> None:
    for redactor in (Redactor(fields, "hash", KEY), Redactor(fields, "drop", None)):
        serialized = orjson.dumps(redacted("password_failed", redactor)).decode()
        assert kept in serialized
        assert gone not in serialized


def test_redaction_does_not_modify_the_event() -> None:
    for redactor in (HASHING, DROPPING):
        for event in SAMPLES.values():
            before = copy.deepcopy(event)
            normalize(event, NormalizeOptions(redaction=redactor))
            assert event == before


@pytest.mark.parametrize(
    "text",
    [
        USER_AGENT,  # Chrome/124.0.0.0 is a version
        "2026-11-26T23:31:00.123Z",
        "version 1.2.3.4.5 of the SDK",
        "999.1.1.1 is not an address",
        "Foo::Bar::Baz",
        "00:1a:2b:3c:4d:5e",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "GA1.1.1234567890.1732663860",
        "@scope/package and user@ alone",
        "redacted:0123456789abcdef",
    ],
)
def test_things_that_are_not_addresses_stay(text: str) -> None:
    assert _scrubbed(text, HASHING) == text
    assert _scrubbed(text, DROPPING) == text


@pytest.mark.parametrize(
    "text",
    [
        "from 203.0.113.7.",
        "203.0.113.7:8080",
        "http://203.0.113.7/callback",
        "ip:2001:db8::1",
        "[2001:db8::1]:443",
        "2001:db8::1: connection reset",
        "fe80::1%eth0",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "::ffff:203.0.113.7",
        "mailto:Ada.Lovelace@Example.com?subject=hi",
        "<ada+tag@sub.example.co.uk>",
        "ünïcødé@例え.jp",
    ],
)
def test_addresses_inside_text_are_found(text: str) -> None:
    for redactor in (HASHING, DROPPING):
        out = _scrubbed(text, redactor)
        assert not re.search(r"203\.0\.113|2001:|0db8|fe80|@", out, re.IGNORECASE), out


@given(
    address=st.emails() | st.ip_addresses().map(str), prefix=st.sampled_from(["", "seen ", "x=", "(", "ip:"])
)
def test_any_address_in_text_is_redacted(address: str, prefix: str) -> None:
    text = f"{prefix}{address} then more"
    assert address not in _scrubbed(text, HASHING)
    assert address not in _scrubbed(text, DROPPING)


def test_configuration_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match="FORWARDER_REDACT_KEY"):
        Redactor(frozenset({"email"}), "hash", None)
    with pytest.raises(ValueError, match="FORWARDER_REDACT_KEY"):
        Redactor(frozenset({"email"}), "hash", b"")
    with pytest.raises(ValueError, match="FORWARDER_REDACT_MODE"):
        Redactor(frozenset({"email"}), "mask", KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="FORWARDER_REDACT: unknown field"):
        Redactor(frozenset({"email", "phone"}), "drop", None)


def test_the_key_never_shows_in_repr() -> None:
    assert "k" * 8 not in repr(HASHING)
    assert "hash" in repr(HASHING)


def _scrubbed(text: str, redactor: Redactor) -> str:
    """``text`` as it comes out of redaction when it is one field of an event."""
    event = make_event("user.updated", data={"note": text})
    return normalize(event, NormalizeOptions(redaction=redactor))["workos"]["data"].get("note", "redacted")
