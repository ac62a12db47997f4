"""Peers on SQLite and PostgreSQL: CRUD and the rules each value must follow."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Engine

from storage import peers
from storage.db import session_scope
from storage.errors import StorageError
from storage.records import PeerRecord

CLINIC = PeerRecord(slug="clinic-a", ae_title="CLINIC_A", host="192.0.2.10", port=104,
                    roles=("destination", "source"))


def test_add_get_list_update_remove(engine: Engine) -> None:
    with session_scope(engine) as session:
        added = peers.add(session, CLINIC)
    assert added.roles == ("source", "destination")
    assert isinstance(added.created_at, datetime) and added.created_at.tzinfo is not None
    with session_scope(engine) as session:
        peers.add(session, PeerRecord(slug="institute-b", ae_title="INST_B", host="inst.example",
                                      port=11112, roles=("destination",)))
        assert peers.get(session, "clinic-a") == added
        assert peers.get(session, "nobody") is None
        assert [p.slug for p in peers.list_all(session)] == ["clinic-a", "institute-b"]
    with session_scope(engine) as session:
        changed = peers.update(session, "clinic-a", port=11113, roles=["query"],
                               pinned_address="2001:db8:0:0::1")
        assert peers.update(session, "nobody", port=1) is None
    assert changed is not None
    assert (changed.port, changed.roles, changed.pinned_address) == (
        11113, ("query",), "2001:db8::1")
    with session_scope(engine) as session:
        assert peers.get(session, "clinic-a") == changed
        unpinned = peers.update(session, "clinic-a", pinned_address=None)
        assert unpinned is not None and unpinned.pinned_address is None
        assert peers.remove(session, "clinic-a") is True
        assert peers.remove(session, "clinic-a") is False
        assert [p.slug for p in peers.list_all(session)] == ["institute-b"]


def test_by_ae_title_returns_every_peer_with_it(engine: Engine) -> None:
    with session_scope(engine) as session:
        peers.add(session, CLINIC)
        peers.add(session, PeerRecord(slug="clinic-a-backup", ae_title="CLINIC_A",
                                      host="192.0.2.11", port=104, roles=("source",),
                                      pinned_address="192.0.2.11"))
        found = peers.by_ae_title(session, "CLINIC_A  ")
        assert peers.by_ae_title(session, "OTHER") == []
    assert [(p.slug, p.pinned_address) for p in found] == [
        ("clinic-a", None), ("clinic-a-backup", "192.0.2.11")]


def test_duplicate_slug_is_refused_clearly(engine: Engine) -> None:
    with session_scope(engine) as session:
        peers.add(session, CLINIC)
    with session_scope(engine) as session:
        with pytest.raises(StorageError, match="peer 'clinic-a' already exists"):
            peers.add(session, CLINIC)
        assert len(peers.list_all(session)) == 1


INVALID: list[tuple[dict[str, object], str]] = [
    ({"slug": "Clinic-A"}, "peer slug: expected 1-63 characters a-z"),
    ({"slug": "-clinic"}, "peer slug: expected"),
    ({"slug": "a" * 64}, "peer slug: expected"),
    ({"slug": ""}, "peer slug: expected"),
    ({"ae_title": ""}, "peer ae_title: expected 1-16"),
    ({"ae_title": "    "}, "peer ae_title: expected"),
    ({"ae_title": "A" * 17}, "peer ae_title: expected"),
    ({"ae_title": "BAD\\AE"}, "peer ae_title: expected"),
    ({"ae_title": "BAD\nAE"}, "peer ae_title: expected"),
    ({"host": ""}, "peer host: expected"),
    ({"port": 0}, "peer port: expected an integer 1-65535, got 0"),
    ({"port": 65536}, "peer port: expected an integer 1-65535"),
    ({"port": True}, "peer port: expected"),
    ({"roles": ("source", "admin")}, "peer roles: expected one or more of source, query, "
                                     "retrieve, destination, results, got admin"),
    ({"roles": ()}, "peer roles: expected one or more of .*, got none"),
    ({"pinned_address": "clinic.example"}, "peer pinned_address: expected an IPv4 or IPv6"),
    ({"max_associations": 0}, "peer max_associations: expected an integer 1-64, got 0"),
    ({"max_attempts": 0}, "peer max_attempts: expected an integer 1-1000, got 0"),
    ({"first_delay_seconds": -5}, "peer first_delay_seconds: expected an integer 1-86400"),
    ({"backoff_multiplier": 11}, "peer backoff_multiplier: expected an integer 1-10, got 11"),
    ({"max_delay_seconds": True}, "peer max_delay_seconds: expected an integer"),
    ({"transfer_syntax": "jpeg"}, "peer transfer_syntax: expected one of stored, "
                                  "uncompressed, got 'jpeg'"),
]


def test_invalid_values_are_refused(engine: Engine) -> None:
    """One database per case would be slow; each case still runs on both databases."""
    for change, message in INVALID:
        values = {"slug": CLINIC.slug, "ae_title": CLINIC.ae_title, "host": CLINIC.host,
                  "port": CLINIC.port, "roles": CLINIC.roles, "pinned_address": None}
        values.update(change)
        with session_scope(engine) as session:
            with pytest.raises(StorageError, match=message):
                peers.add(session, PeerRecord(**values))  # type: ignore[arg-type]
            assert peers.list_all(session) == [], change


def test_update_checks_values_and_fields(engine: Engine) -> None:
    with session_scope(engine) as session:
        peers.add(session, CLINIC)
        with pytest.raises(StorageError, match="peer port: expected"):
            peers.update(session, "clinic-a", port=70000)
        with pytest.raises(StorageError, match="peer update: cannot change slug"):
            peers.update(session, "clinic-a", slug="other")  # type: ignore[call-arg]
    with session_scope(engine, readonly=True) as session:
        assert peers.get(session, "clinic-a") == peers.get(session, "clinic-a")
        current = peers.get(session, "clinic-a")
    assert current is not None and current.port == 104


def test_destination_options_default_then_change_and_go_back(engine: Engine) -> None:
    with session_scope(engine) as session:
        added = peers.add(session, CLINIC)
    assert (added.max_associations, added.max_attempts, added.first_delay_seconds,
            added.backoff_multiplier, added.max_delay_seconds, added.transfer_syntax) == (
        1, None, None, None, None, "stored")
    with session_scope(engine) as session:
        peers.update(session, "clinic-a", max_associations=4, max_attempts=3,
                     first_delay_seconds=5, backoff_multiplier=3, max_delay_seconds=60,
                     transfer_syntax="uncompressed")
    with session_scope(engine, readonly=True) as session:
        changed = peers.get(session, "clinic-a")
    assert changed is not None and (
        changed.max_associations, changed.max_attempts, changed.first_delay_seconds,
        changed.backoff_multiplier, changed.max_delay_seconds, changed.transfer_syntax) == (
        4, 3, 5, 3, 60, "uncompressed")
    with session_scope(engine) as session:
        with pytest.raises(StorageError, match="peer max_associations: expected"):
            peers.update(session, "clinic-a", max_associations=65)
        back = peers.update(session, "clinic-a", max_attempts=None, first_delay_seconds=None,
                            backoff_multiplier=None, max_delay_seconds=None)
    assert back is not None and (back.max_attempts, back.first_delay_seconds,
                                 back.backoff_multiplier, back.max_delay_seconds,
                                 back.max_associations) == (None, None, None, None, 4)
