"""How large a real WorkOS event body gets: ``python -m bench.event_sizes``.

``FORWARDER_MAX_BODY_BYTES`` should refuse nothing WorkOS sends and let an attacker hold as
little as possible. The biggest events are directory users: ``dsync.user.updated`` carries
the user, its ``raw_attributes`` (what the identity provider sent, kept whole), its
``custom_attributes``, roles, and ``previous_attributes``; ``dsync.group.user_added`` carries
a user and a group. Each event here is built as a heavy but real directory would send it (a
SCIM user of Microsoft Entra ID or Okta with the enterprise extension, every multi-valued
attribute filled, 150 group memberships in the raw attributes, 40 custom attributes, 10
roles, and every changed attribute in ``previous_attributes``), passed through the workos
SDK's own models (``from_dict``, then ``to_dict``: only fields the SDK knows survive), and
measured as the JSON WorkOS posts. Needs the test extra (``workos``).
"""

from __future__ import annotations

from typing import Any

import orjson
from workos.common.models.dsync_group_user_added import DsyncGroupUserAdded
from workos.common.models.dsync_user_updated import DsyncUserUpdated

GROUPS = 150
CUSTOM_ATTRIBUTES = 40
ROLES = 10


def _raw_attributes(user: int) -> dict[str, Any]:
    """A SCIM 2.0 user as Entra ID or Okta sends it, every attribute set."""
    return {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ],
        "id": f"00u1a2b3c4d5e6f7g8h{user:04d}",
        "externalId": f"6c1d7a8e-2f4b-4c9d-9e3a-{user:012d}",
        "userName": f"firstname.lastname{user}@example-enterprise.com",
        "name": {
            "givenName": "Firstname",
            "familyName": "Lastname-Doubledbarrel",
            "middleName": "Middlename",
            "honorificPrefix": "Dr.",
            "honorificSuffix": "PhD",
            "formatted": "Dr. Firstname Middlename Lastname-Doubledbarrel PhD",
        },
        "displayName": "Firstname Lastname-Doubledbarrel",
        "nickName": "Nick",
        "title": "Senior Principal Staff Engineer, Platform Infrastructure",
        "userType": "Employee",
        "preferredLanguage": "en-US",
        "locale": "en_US",
        "timezone": "America/Los_Angeles",
        "active": True,
        "emails": [
            {"value": f"firstname.lastname{user}@example-enterprise.com", "type": kind, "primary": i == 0}
            for i, kind in enumerate(("work", "home", "other", "alias"))
        ],
        "phoneNumbers": [
            {"value": "+1 (555) 010-0000", "type": kind, "primary": i == 0}
            for i, kind in enumerate(("work", "mobile", "home", "fax"))
        ],
        "addresses": [
            {
                "type": kind,
                "streetAddress": "1234 Long Street Name Boulevard, Building 7, Floor 12",
                "locality": "San Francisco",
                "region": "CA",
                "postalCode": "94105",
                "country": "US",
                "formatted": "1234 Long Street Name Boulevard, Building 7\nSan Francisco, CA 94105 US",
                "primary": kind == "work",
            }
            for kind in ("work", "home")
        ],
        "groups": [
            {
                "value": f"00g{group:017d}",
                "display": f"Engineering / Platform / Infrastructure / Team {group} (all members)",
                "$ref": f"https://example.okta.com/api/v1/scim/v2/Groups/00g{group:017d}",
            }
            for group in range(GROUPS)
        ],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "employeeNumber": f"E{user:08d}",
            "costCenter": "CC-1234-Platform-Infrastructure",
            "organization": "Example Enterprise Holdings, Inc.",
            "division": "Research and Development",
            "department": "Platform Infrastructure Engineering",
            "manager": {
                "value": "00u9z8y7x6w5v4u3t2s1",
                "displayName": "Manager Firstname Lastname",
                "$ref": "https://example.okta.com/api/v1/scim/v2/Users/00u9z8y7x6w5v4u3t2s1",
            },
        },
        "meta": {
            "resourceType": "User",
            "created": "2019-03-01T08:00:00.000Z",
            "lastModified": "2026-01-15T10:00:00.000Z",
            "location": f"https://example.okta.com/api/v1/scim/v2/Users/00u1a2b3c4d5e6f7g8h{user:04d}",
        },
    }


def _directory_user(user: int) -> dict[str, Any]:
    raw = _raw_attributes(user)
    return {
        "object": "directory_user",
        "id": f"directory_user_01HQ{user:022d}",
        "directory_id": "directory_01HQ00000000000000000000",
        "organization_id": "org_01HQ000000000000000000000000",
        "idp_id": raw["id"],
        "email": raw["userName"],
        "first_name": "Firstname",
        "last_name": "Lastname-Doubledbarrel",
        "name": raw["displayName"],
        "state": "active",
        "emails": [{"primary": e["primary"], "type": e["type"], "value": e["value"]} for e in raw["emails"]],
        "job_title": raw["title"],
        "username": raw["userName"],
        "custom_attributes": {
            f"custom_attribute_{n:02d}": f"a value an administrator mapped, number {n}"
            for n in range(CUSTOM_ATTRIBUTES)
        },
        "raw_attributes": raw,
        "role": {"slug": "member"},
        "roles": [{"slug": f"role-{n}-platform-infrastructure"} for n in range(ROLES)],
        "created_at": "2019-03-01T08:00:00.000Z",
        "updated_at": "2026-01-15T10:00:00.000Z",
    }


def user_updated() -> dict[str, Any]:
    """``dsync.user.updated``: the user, and everything that changed in ``previous_attributes``
    (here the whole raw record, as when a provider re-sends every attribute)."""
    data = _directory_user(1)
    data["previous_attributes"] = {"raw_attributes": _raw_attributes(2), "custom_attributes": {}}
    event = {
        "object": "event",
        "id": "event_01HQ0000000000000000000001",
        "event": "dsync.user.updated",
        "data": data,
        "created_at": "2026-01-15T10:00:00.000Z",
    }
    return DsyncUserUpdated.from_dict(event).to_dict()


def group_user_added() -> dict[str, Any]:
    """``dsync.group.user_added``: a whole user and the group."""
    event = {
        "object": "event",
        "id": "event_01HQ0000000000000000000002",
        "event": "dsync.group.user_added",
        "data": {
            "directory_id": "directory_01HQ00000000000000000000",
            "user": _directory_user(3),
            "group": {
                "object": "directory_group",
                "id": "directory_group_01HQ0000000000000000000000",
                "idp_id": "00g00000000000000000",
                "directory_id": "directory_01HQ00000000000000000000",
                "organization_id": "org_01HQ000000000000000000000000",
                "name": "Engineering / Platform / Infrastructure / Team 0 (all members)",
                "raw_attributes": {"displayName": "Engineering / Platform / Infrastructure / Team 0"},
                "created_at": "2019-03-01T08:00:00.000Z",
                "updated_at": "2026-01-15T10:00:00.000Z",
            },
        },
        "created_at": "2026-01-15T10:00:00.000Z",
    }
    return DsyncGroupUserAdded.from_dict(event).to_dict()


def main() -> None:
    events = (("dsync.user.updated", user_updated()), ("dsync.group.user_added", group_user_added()))
    for name, event in events:
        print(f"{name}: {len(orjson.dumps(event)):,} bytes")


if __name__ == "__main__":
    main()
