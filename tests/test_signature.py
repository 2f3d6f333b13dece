"""Webhook signature verification: every rejection reason, rotation, the tolerance edges, and the
official WorkOS Python SDK as an oracle (whatever it accepts, we accept too)."""

from __future__ import annotations

import hashlib
import hmac
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from workos.webhooks._verification import verify_header

from forwarder.signature import SignatureError, Verifier, _parse, _parse_parts, parse_header, sign

SECRET = "whsec_primary_0123456789abcdef"
OTHER_SECRET = "whsec_rotated_fedcba9876543210"
NOW = 1_764_200_000_000
BODY = b'{"id":"event_01JBX","event":"authentication.password_failed","data":{"email":"a@example.com"}}'
TOLERANCE_MS = 180_000


def v1_for(t: str, body: bytes, secret: str = SECRET) -> str:
    """An independent HMAC computation, so the tests do not trust sign() to check verify()."""
    return hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def header_for(t: int | str = NOW, body: bytes = BODY, secret: str = SECRET) -> str:
    return f"t={t}, v1={v1_for(str(t), body, secret)}"


def rejection(header: str | None, body: bytes = BODY) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        Verifier([SECRET]).verify(header, body, now_ms=NOW)
    return caught.value


GOOD_V1 = v1_for(str(NOW), BODY)


@pytest.mark.parametrize(
    ("header", "reason", "detail"),
    [
        (None, "missing_signature", "no WorkOS-Signature header"),
        ("", "missing_signature", "no WorkOS-Signature header"),
        (f"t={NOW}", "malformed_signature", "missing v1"),
        (f"v1={GOOD_V1}", "malformed_signature", "missing t"),
        (f"t={NOW}, t={NOW}, v1={GOOD_V1}", "malformed_signature", "duplicate t"),
        (f"t={NOW}, v1={GOOD_V1}, v1={GOOD_V1}", "malformed_signature", "duplicate v1"),
        (f"t={NOW}, v1={GOOD_V1},", "malformed_signature", "empty part"),
        (f"t={NOW}, , v1={GOOD_V1}", "malformed_signature", "empty part"),
        ("   ", "malformed_signature", "empty part"),
        (f"t={NOW}, {GOOD_V1}", "malformed_signature", "part without '='"),
        (f"t={NOW}, v0={GOOD_V1}", "malformed_signature", "unknown part 'v0'"),
        (f"T={NOW}, v1={GOOD_V1}", "malformed_signature", "unknown part 'T'"),
        (f"t={NOW}, v1={GOOD_V1}, v2={GOOD_V1}", "malformed_signature", "unknown part 'v2'"),
        (f"t=, v1={GOOD_V1}", "malformed_signature", "t is not a number"),
        (f"t=1764200000.5, v1={GOOD_V1}", "malformed_signature", "t is not a number"),
        (f"t=-{NOW}, v1={GOOD_V1}", "malformed_signature", "t is not a number"),
        (f"t=+{NOW}, v1={GOOD_V1}", "malformed_signature", "t is not a number"),
        (f"t=2026-11-26T23:31:00Z, v1={GOOD_V1}", "malformed_signature", "t is not a number"),
        (f"t=\u00b2{NOW}, v1={GOOD_V1}", "malformed_signature", "t is not a number"),
        (f"t={'9' * 21}, v1={GOOD_V1}", "malformed_signature", "t has more than 20 digits"),
        (f"t={NOW}, v1=", "malformed_signature", "v1 has 0 characters, expected 64 hex digits"),
        (
            f"t={NOW}, v1={GOOD_V1[:-2]}",
            "malformed_signature",
            "v1 has 62 characters, expected 64 hex digits",
        ),
        (f"t={NOW}, v1={GOOD_V1[:-1]}g", "malformed_signature", "v1 is not hex"),
        (f"t={NOW}, v1={GOOD_V1[:30]}  {GOOD_V1[32:]}", "malformed_signature", "v1 is not hex"),
        (header_for(secret=OTHER_SECRET), "bad_signature", "v1 matches none of the configured secrets"),
        (header_for(body=BODY + b" "), "bad_signature", "v1 matches none of the configured secrets"),
        (f"t={NOW + 1}, v1={GOOD_V1}", "bad_signature", "v1 matches none of the configured secrets"),
        (f"t={NOW}, v1={'0' * 64}", "bad_signature", "v1 matches none of the configured secrets"),
        (header_for(NOW - 212_000), "stale_timestamp", "timestamp 212 s in the past (tolerance 180 s)"),
        (header_for(NOW + 180_001), "stale_timestamp", "timestamp 180.001 s in the future (tolerance 180 s)"),
        (header_for(0), "stale_timestamp", f"timestamp {NOW // 1000} s in the past (tolerance 180 s)"),
    ],
)
def test_each_rejection_has_its_reason_and_detail(header: str | None, reason: str, detail: str) -> None:
    error = rejection(header)
    assert (error.reason, error.detail) == (reason, detail)
    assert str(error) == f"{reason}: {detail}"
    assert SECRET not in str(error)
    assert GOOD_V1 not in str(error)


def test_skew_is_reported_once_the_header_parses() -> None:
    assert rejection(header_for(NOW - 212_000)).skew_ms == 212_000
    assert rejection(header_for(NOW + 5_000, secret=OTHER_SECRET)).skew_ms == -5_000
    assert rejection(f"t={NOW}, v1=zz").skew_ms is None
    assert rejection(None).skew_ms is None


@pytest.mark.parametrize(
    "header",
    [
        f"t={NOW}, v1={GOOD_V1}",
        f"t={NOW},v1={GOOD_V1}",
        f"v1={GOOD_V1}, t={NOW}",
        f"v1={GOOD_V1},t={NOW}",
        f"  t={NOW} ,\tv1={GOOD_V1}  ",
        f"t={NOW}, v1={GOOD_V1.upper()}",
    ],
)
def test_accepts_either_order_and_spacing(header: str) -> None:
    assert Verifier([SECRET]).verify(header, BODY, now_ms=NOW + 1_500) == 1_500


def test_rotation_accepts_any_configured_secret() -> None:
    both = Verifier([SECRET, OTHER_SECRET])
    assert both.verify(header_for(secret=SECRET), BODY, now_ms=NOW) == 0
    assert both.verify(header_for(secret=OTHER_SECRET), BODY, now_ms=NOW) == 0
    with pytest.raises(SignatureError) as caught:
        Verifier([SECRET]).verify(header_for(secret=OTHER_SECRET), BODY, now_ms=NOW)
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize(
    ("skew_ms", "accepted"),
    [
        (0, True),
        (TOLERANCE_MS, True),
        (-TOLERANCE_MS, True),
        (TOLERANCE_MS + 1, False),
        (-TOLERANCE_MS - 1, False),
    ],
)
def test_default_tolerance_is_180_s_in_both_directions(skew_ms: int, accepted: bool) -> None:
    header = header_for(NOW - skew_ms)
    if accepted:
        assert Verifier([SECRET]).verify(header, BODY, now_ms=NOW) == skew_ms
    else:
        error = rejection(header)
        assert (error.reason, error.skew_ms) == ("stale_timestamp", skew_ms)


def test_tolerance_is_configurable() -> None:
    header = header_for(NOW - 240_000)
    assert Verifier([SECRET], tolerance_s=300).verify(header, BODY, now_ms=NOW) == 240_000
    with pytest.raises(SignatureError) as caught:
        Verifier([SECRET], tolerance_s=0.5).verify(header_for(NOW - 501), BODY, now_ms=NOW)
    assert caught.value.detail == "timestamp 0.501 s in the past (tolerance 0.5 s)"


def test_a_bad_signature_wins_over_a_stale_timestamp() -> None:
    # An operator reading "stale_timestamp" can trust the secret is right and look at clocks or replays.
    error = rejection(header_for(NOW - 3_600_000, secret=OTHER_SECRET))
    assert (error.reason, error.skew_ms) == ("bad_signature", 3_600_000)


def test_verifies_the_raw_bytes_not_the_json() -> None:
    not_utf8 = b'{"id":"event_1","data":"\xff\xfe"}'
    assert Verifier([SECRET]).verify(header_for(body=not_utf8), not_utf8, now_ms=NOW) == 0
    reserialized = b'{"id": "event_01JBX", "event": "authentication.password_failed"}'
    assert rejection(header_for(), reserialized).reason == "bad_signature"


def test_t_is_signed_as_sent_including_leading_zeros() -> None:
    header = header_for(f"0{NOW}")
    assert Verifier([SECRET]).verify(header, BODY, now_ms=NOW) == 0
    assert parse_header(header) == (NOW, v1_for(f"0{NOW}", BODY))


def test_parse_header_returns_t_and_lowercase_v1() -> None:
    assert parse_header(f"v1={GOOD_V1.upper()},t={NOW}") == (NOW, GOOD_V1)
    with pytest.raises(SignatureError) as caught:
        parse_header("")
    assert (caught.value.reason, caught.value.detail) == ("malformed_signature", "empty part")


def test_sign_produces_the_header_workos_sends() -> None:
    assert sign(BODY, SECRET, timestamp_ms=NOW) == f"t={NOW}, v1={GOOD_V1}"
    fresh = sign(BODY, SECRET)
    assert abs(Verifier([SECRET]).verify(fresh, BODY)) <= TOLERANCE_MS
    with pytest.raises(ValueError, match="empty"):
        sign(BODY, "")


@pytest.mark.parametrize(
    ("secrets", "tolerance_s", "error", "message"),
    [
        ([], 180.0, ValueError, "at least one webhook secret"),
        ((SECRET, ""), 180.0, ValueError, "secret #2 is empty"),
        (SECRET, 180.0, TypeError, "not a single string"),
        ([SECRET], -1.0, ValueError, "tolerance_s must be >= 0"),
        ([SECRET], math.nan, ValueError, "tolerance_s must be >= 0"),
    ],
)
def test_verifier_refuses_unsafe_configuration(
    secrets: list[str] | str, tolerance_s: float, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Verifier(secrets, tolerance_s=tolerance_s)


# --- The official SDK as an oracle -------------------------------------------------------------------


def sdk_accepts(header: str, body: bytes, secret: str) -> bool:
    try:
        verify_header(event_body=body, event_signature=header, secret=secret, tolerance=180)
    except ValueError:
        return False
    return True


def is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


secrets_st = st.text(min_size=1, max_size=40)
bodies_st = st.one_of(st.text(max_size=300).map(str.encode), st.binary(max_size=300))
# Offsets from the wall clock, kept away from the 180 s edge: the SDK reads its own clock a moment later.
fresh_offsets = st.integers(-170_000, 170_000)
stale_offsets = st.one_of(st.integers(190_000, 10**10), st.integers(-(10**10), -190_000))
# Drawn first so Hypothesis's lean towards simple values does not starve the accepted case.
outcomes = st.sampled_from(["accepted", "bad_signature", "stale_timestamp"])
CANONICAL = (", ", True, False, "")  # separator, t first, uppercase v1, padding: what WorkOS sends
layouts = st.one_of(
    st.just(CANONICAL),
    st.tuples(
        st.sampled_from([", ", ",", " , ", ",  ", ",\t", " ,"]),
        st.booleans(),
        st.booleans(),
        st.sampled_from(["", " ", "  "]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    outcome=outcomes,
    secret=secrets_st,
    body=bodies_st,
    fresh_offset=fresh_offsets,
    stale_offset=stale_offsets,
    layout=layouts,
)
def test_whatever_the_sdk_accepts_we_accept(
    outcome: str,
    secret: str,
    body: bytes,
    fresh_offset: int,
    stale_offset: int,
    layout: tuple[str, bool, bool, str],
) -> None:
    separator, t_first, upper, pad = layout
    t = str(time.time_ns() // 1_000_000 - (stale_offset if outcome == "stale_timestamp" else fresh_offset))
    v1 = v1_for(t, body, secret + "x" if outcome == "bad_signature" else secret)
    parts = [f"t={t}", f"v1={v1.upper() if upper else v1}"]
    header = pad + separator.join(parts if t_first else parts[::-1]) + pad

    try:
        Verifier([secret]).verify(header, body)
        result = "accepted"
    except SignatureError as error:
        result = error.reason
    sdk_accepted = sdk_accepts(header, body, secret)

    assert result == outcome
    if sdk_accepted:
        assert result == "accepted"
    # The SDK takes only this one layout, and only bodies that decode as UTF-8; there we agree both ways.
    if layout == CANONICAL and is_utf8(body):
        assert sdk_accepted == (result == "accepted")


@settings(max_examples=100, deadline=None)
@given(secret=secrets_st, body=st.text(max_size=300).map(str.encode))
def test_sdk_accepts_what_sign_produces(secret: str, body: bytes) -> None:
    assert sdk_accepts(sign(body, secret), body, secret)


ARABIC_INDIC_NOW = "".join(chr(0x0660 + int(digit)) for digit in str(NOW))


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        # The SDK slices the first 2 and 3 characters off the parts without looking at them.
        (f"x={NOW}, yy={GOOD_V1}", "unknown part 'x'"),
        # The SDK parses t with int(), which admits a sign, underscores, padding and non-ASCII digits,
        # and signs the string as sent.
        (f"t=+{NOW}, v1={v1_for(f'+{NOW}', BODY)}", "t is not a number"),
        (f"t=1_{str(NOW)[1:]}, v1={v1_for(f'1_{str(NOW)[1:]}', BODY)}", "t is not a number"),
        (f"t= {NOW}, v1={v1_for(f' {NOW}', BODY)}", "t is not a number"),
        (f"t={ARABIC_INDIC_NOW}, v1={v1_for(ARABIC_INDIC_NOW, BODY)}", "t is not a number"),
    ],
)
def test_lax_forms_the_sdk_takes_are_rejected_as_malformed(header: str, detail: str) -> None:
    # t=NOW is long past: the SDK sees it as fresh only with a tolerance this wide.
    sdk_tolerance = abs(time.time_ns() // 1_000_000 - NOW) // 1000 + 3600
    verify_header(event_body=BODY, event_signature=header, secret=SECRET, tolerance=sdk_tolerance)
    assert rejection(header).detail == detail


# --- No header crashes the parser ------------------------------------------------------------------

fragments = st.sampled_from(
    ["t=", "v1=", "T=", "v2=", ",", ", ", " ", "=", "\t", "\x00", "\u0661", "\u00b2", "+", "-", "_", "."]
)
structured_headers = st.lists(
    st.one_of(fragments, st.text(alphabet="0123456789abcdefABCDEFxyz", max_size=70), st.text(max_size=4)),
    max_size=8,
).map("".join)
any_header = st.one_of(st.text(), structured_headers)


@settings(max_examples=400, deadline=None)
@given(header=any_header)
def test_no_header_crashes_the_parser(header: str) -> None:
    try:
        t, v1 = parse_header(header)
    except SignatureError as error:
        assert error.reason == "malformed_signature"
    else:
        assert t >= 0
        assert len(v1) == 64


@settings(max_examples=400, deadline=None)
@given(header=any_header, body=st.binary(max_size=64))
def test_no_header_crashes_verify(header: str, body: bytes) -> None:
    try:
        Verifier([SECRET, OTHER_SECRET]).verify(header, body, now_ms=NOW)
    except SignatureError as error:
        assert error.reason in {
            "missing_signature",
            "malformed_signature",
            "bad_signature",
            "stale_timestamp",
        }
        assert SECRET not in str(error)


near_canonical = st.tuples(
    st.sampled_from(["t=", "t =", "T=", " t=", ""]),
    st.text(alphabet="0123456789 ²", max_size=22),
    st.sampled_from([", v1=", ",v1=", ", v1 =", ", V1=", ", v1=,"]),
    st.text(alphabet="0123456789abcdefABCDEF ,x", min_size=62, max_size=66),
    st.sampled_from(["", " ", ",", ", v1=00"]),
).map("".join)


@settings(max_examples=400, deadline=None)
@given(header=st.one_of(near_canonical, any_header))
def test_the_quick_parse_answers_as_the_general_one(header: str) -> None:
    """``_parse`` takes WorkOS's own form apart without the general loop: same answer, same error."""
    try:
        expected: tuple[str, bytes] | str = _parse_parts(header)
    except SignatureError as error:
        expected = error.detail
    try:
        got: tuple[str, bytes] | str = _parse(header)
    except SignatureError as error:
        got = error.detail
    assert got == expected
