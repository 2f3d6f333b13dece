"""FORWARDER_GEOIP_DB: client IPs located with MaxMind's reader, under Datadog's GeoIP names.

The databases are MaxMind's public test databases (tests/data/README.md): real .mmdb files
read by the real reader, with known entries (81.2.69.142 is London, 2001:480::/32 San Diego).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forwarder.config import ConfigError, Settings
from forwarder.datadog.assets import load_assets
from forwarder.datadog.pipelines import written_attributes
from forwarder.geoip import GeoIP, GeoIPError
from forwarder.normalize import NormalizeOptions, normalize
from forwarder.redaction import Redactor
from tests.samples import make_event
from tests.service import Service, wait_for

DATA = Path(__file__).resolve().parent / "data"
CITY = DATA / "GeoLite2-City-Test.mmdb"
COUNTRY = DATA / "GeoLite2-Country-Test.mmdb"
ASN = DATA / "GeoLite2-ASN-Test.mmdb"
ROOT = Path(__file__).resolve().parent.parent

LONDON_IP = "81.2.69.142"
LONDON = {
    "country": {"iso_code": "GB", "name": "United Kingdom"},
    "continent": {"code": "EU", "name": "Europe"},
    "subdivision": {"iso_code": "ENG", "name": "England"},
    "city": {"name": "London"},
    "location": {"latitude": 51.5142, "longitude": -0.0931},
}


def failed_sign_in(ip: str) -> dict[str, Any]:
    event = make_event("authentication.password_failed")
    event["data"]["ip_address"] = ip
    return event


def test_a_city_database_gives_country_continent_subdivision_city_and_coordinates() -> None:
    geoip = GeoIP(str(CITY))
    assert geoip.lookup(LONDON_IP) == LONDON
    san_diego = geoip.lookup("2001:480::1")
    assert san_diego is not None
    assert san_diego["city"] == {"name": "San Diego"}
    assert san_diego["country"]["iso_code"] == "US"


def test_a_country_database_gives_the_country_and_continent_only() -> None:
    assert GeoIP(str(COUNTRY)).lookup(LONDON_IP) == {
        "country": {"iso_code": "GB", "name": "United Kingdom"},
        "continent": {"code": "EU", "name": "Europe"},
    }


@pytest.mark.parametrize("ip", ["10.0.0.1", "127.0.0.1", "198.51.100.1", "not an address", "::1"])
def test_private_unknown_and_malformed_addresses_have_no_location(ip: str) -> None:
    assert GeoIP(str(CITY)).lookup(ip) is None


def test_answers_are_cached_per_ip() -> None:
    geoip = GeoIP(str(CITY))
    first = geoip.lookup(LONDON_IP)
    assert geoip.lookup(LONDON_IP) is first
    info = geoip.lookup.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses) == (1, 1)


def test_every_record_with_an_ip_gets_network_client_geoip() -> None:
    options = NormalizeOptions(geoip=GeoIP(str(CITY)))
    record = normalize(failed_sign_in(LONDON_IP), options)
    assert record["network"]["client"] == {"ip": LONDON_IP, "geoip": LONDON}
    unknown = normalize(failed_sign_in("10.1.2.3"), options)
    assert unknown["network"]["client"] == {"ip": "10.1.2.3"}
    without_ip = make_event("authentication.password_failed")
    without_ip["data"]["ip_address"] = None
    assert "network" not in normalize(without_ip, options)


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_the_location_survives_redaction_of_the_ip(mode: str) -> None:
    redactor = Redactor(frozenset({"ip"}), "hash" if mode == "hash" else "drop", b"k" * 32)
    record = normalize(
        failed_sign_in(LONDON_IP), NormalizeOptions(redaction=redactor, geoip=GeoIP(str(CITY)))
    )
    client = record["network"]["client"]
    assert client["geoip"] == LONDON
    if mode == "hash":
        assert client["ip"].startswith("redacted:")
    else:
        assert "ip" not in client
    assert LONDON_IP not in str(record)


def test_our_names_are_the_ones_datadogs_geoip_parser_writes() -> None:
    """The shipped pipeline's GeoIP parser writes network.client.geoip.*: a facet means the
    same thing whether the forwarder or Datadog located the IP."""
    (pipeline,) = [asset for asset in load_assets(ROOT)[0] if asset.kind == "pipeline"]
    datadog_writes = written_attributes(pipeline.document)
    ours = {f"network.client.geoip.{group}.{leaf}" for group, values in LONDON.items() for leaf in values}
    assert ours <= datadog_writes


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (DATA / "missing.mmdb", "is not a file"),
        (DATA, "is not a file"),
        (Path(__file__), "is not a MaxMind database"),
        (ASN, "GeoLite2-ASN database, which has no locations"),
    ],
)
def test_a_database_that_cannot_locate_is_a_config_error_naming_the_variable(path: Path, reason: str) -> None:
    with pytest.raises(GeoIPError, match=reason):
        GeoIP(str(path))
    env = {"WORKOS_WEBHOOK_SECRET": "s", "FORWARDER_GEOIP_DB": str(path)}
    with pytest.raises(ConfigError, match=reason) as raised:
        Settings.from_env(env)
    assert raised.value.variable == "FORWARDER_GEOIP_DB"


def test_the_service_refuses_to_start_with_a_bad_database(start_service: Callable[..., Service]) -> None:
    service = start_service(wait=False, FORWARDER_GEOIP_DB=str(ASN))
    assert service.proc is not None
    assert service.proc.wait(30) == 2
    stderr = service.stderr_path.read_text()
    assert "FORWARDER_GEOIP_DB" in stderr and "no locations" in stderr
    assert "Traceback" not in stderr


def test_the_service_delivers_located_records_with_the_ip_hashed(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(
        FORWARDER_GEOIP_DB=str(CITY), FORWARDER_REDACT="ip", FORWARDER_REDACT_KEY="k" * 32
    )
    event = failed_sign_in(LONDON_IP)
    assert service.post(event).status_code == 200
    (record,) = wait_for(service.records, what="the record in the JSON-lines file")
    assert record["network"]["client"]["geoip"] == LONDON
    assert record["network"]["client"]["ip"].startswith("redacted:")
