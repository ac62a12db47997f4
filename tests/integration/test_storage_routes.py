"""storage.routes on SQLite and PostgreSQL: checks, order, changes, import, study facts."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

import storage.peers as peers
import storage.routes as routes
from storage import index
from storage.crypto import MapCipher
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import RouteDestination
from storage.records import PeerRecord
from storage.routes import RouteSpec
from tests.fixtures_db import instance_record

CIPHER = MapCipher(b"k" * 32)


@pytest.fixture
def peered(engine: Engine) -> Engine:
    """The engine with two destinations and one source-only peer."""
    with session_scope(engine) as session:
        for slug, roles in (("institute-a", ("destination",)),
                            ("institute-b", ("query", "destination")),
                            ("clinic-a", ("source",))):
            peers.add(session, PeerRecord(slug=slug, ae_title=slug.upper()[:16],
                                          host="127.0.0.1", port=104, roles=roles))
    return engine


def _add(engine: Engine, **values: Any) -> routes.RouteRecord:
    values.setdefault("destinations", ("institute-a",))
    with session_scope(engine) as session:
        return routes.add(session, RouteSpec(**values))


def _error(engine: Engine, **values: Any) -> str:
    with pytest.raises(StorageError) as caught:
        _add(engine, **values)
    return str(caught.value)


def test_add_get_and_the_stored_form(peered: Engine) -> None:
    added = _add(peered, name="ct-a", destinations=("institute-b", "institute-a", "institute-b"),
                 conditions=(" ModalitiesInStudy =CT", "SendingPeer=!clinic-b"), priority=-5)
    assert added.destinations == ("institute-b", "institute-a")  # order kept, once each
    assert added.conditions == ("ModalitiesInStudy=CT", "SendingPeer=!clinic-b")
    assert added.created_at == added.updated_at and added.created_at.tzinfo is not None
    with session_scope(peered, readonly=True) as session:
        assert routes.get(session, "ct-a") == added
        assert routes.get(session, "nope") is None


@pytest.mark.parametrize("values, message", [
    ({"name": "CT_A"}, "route name: expected 1-63 characters a-z, 0-9 and '-', starting with "
                       "a letter or digit, got 'CT_A'"),
    ({"name": "r", "priority": 2**31}, "route priority: expected an integer -2147483648 to "
                                       "2147483647, got 2147483648"),
    ({"name": "r", "priority": True}, "route priority: expected an integer"),
    ({"name": "r", "enabled": "yes"}, "route enabled: expected true or false, got 'yes'"),
    ({"name": "r", "destinations": ()}, "route destinations: expected one or more peer slugs "
                                        "with the destination role, got none"),
    ({"name": "r", "destinations": ("institute-z",)},
     "route destinations: expected a registered peer, got 'institute-z'; see: dicom-gateway "
     "peer list"),
    ({"name": "r", "destinations": ("clinic-a",)},
     "route destinations: expected a peer with the destination role, got 'clinic-a' (roles "
     "source); add it with: dicom-gateway peer update clinic-a --role source --role "
     "destination"),
    ({"name": "r", "conditions": ("Modality=re:[",)},
     "route conditions: 'Modality=re:[': expected a Python regular expression after 're:', "
     "got '['"),
    ({"name": "r", "conditions": ("Colour=red",)}, "route conditions: 'Colour=red': unknown "
                                                   "keyword 'Colour'; expected one of"),
])
def test_bad_values_name_the_field_the_value_and_the_rule(
    peered: Engine, values: dict[str, Any], message: str
) -> None:
    assert message in _error(peered, **values)
    with session_scope(peered, readonly=True) as session:
        assert routes.list_all(session) == []


def test_a_name_is_taken_once(peered: Engine) -> None:
    _add(peered, name="ct-a")
    assert "route name: 'ct-a' already exists" in _error(peered, name="ct-a")


def test_list_is_in_evaluation_order(peered: Engine) -> None:
    for name, priority in (("b", 20), ("c", 10), ("a", 20), ("d", -1)):
        _add(peered, name=name, priority=priority)
    with session_scope(peered, readonly=True) as session:
        assert [r.name for r in routes.list_all(session)] == ["d", "c", "a", "b"]


def test_update_changes_checks_and_moves_updated_at_only_on_change(peered: Engine) -> None:
    added = _add(peered, name="ct-a", conditions=("Modality=CT",))
    with session_scope(peered) as session:
        same = routes.update(session, "ct-a", enabled=True, priority=100,
                             destinations=["institute-a"])
        assert same is not None and same.updated_at == added.updated_at
        changed = routes.update(session, "ct-a", enabled=False, priority=7,
                                conditions=["Modality=MR", "StudyDate=range:20260101-"],
                                destinations=["institute-b", "institute-a"])
        assert changed is not None
        assert (changed.enabled, changed.priority, changed.destinations, changed.conditions) == (
            False, 7, ("institute-b", "institute-a"), ("Modality=MR", "StudyDate=range:20260101-"))
        assert changed.updated_at > added.updated_at
        assert routes.update(session, "nope", enabled=True) is None
        with pytest.raises(StorageError, match="route update: cannot change name"):
            routes.update(session, "ct-a", name="x")  # type: ignore[call-arg]
        with pytest.raises(StorageError, match="route destinations: expected a peer with the "
                                               "destination role, got 'clinic-a'"):
            routes.update(session, "ct-a", destinations=["clinic-a"])


def test_remove_takes_the_destinations_with_it(peered: Engine) -> None:
    _add(peered, name="ct-a", destinations=("institute-a", "institute-b"))
    with session_scope(peered) as session:
        assert routes.remove(session, "ct-a") is True
        assert routes.remove(session, "ct-a") is False
        count = session.execute(select(func.count()).select_from(RouteDestination))
        assert count.scalar_one() == 0


def test_a_routed_peer_keeps_its_role_and_cannot_be_removed(peered: Engine) -> None:
    _add(peered, name="ct-a", destinations=("institute-b",))
    with session_scope(peered) as session:
        with pytest.raises(StorageError, match="peer 'institute-b' is a destination of route "
                                               "ct-a"):
            peers.remove(session, "institute-b")
        with pytest.raises(StorageError, match="peer roles: expected destination among them"):
            peers.update(session, "institute-b", roles=["query"])
        assert peers.update(session, "institute-b", roles=["destination"]) is not None
        routes.remove(session, "ct-a")
        assert peers.remove(session, "institute-b") is True


def test_sync_checks_everything_before_writing(peered: Engine) -> None:
    _add(peered, name="keep")
    with session_scope(peered) as session:
        with pytest.raises(StorageError) as caught:
            routes.sync(session, [
                RouteSpec(name="new", destinations=("institute-a",)),
                RouteSpec(name="bad", destinations=("institute-z",)),
                RouteSpec(name="new", destinations=("institute-a",)),
                RouteSpec(name="worse", destinations=("institute-a",), conditions=("X=1",)),
            ], replace=True)
    message = str(caught.value)
    assert message.startswith("route bad: destinations: expected a registered peer, got "
                              "'institute-z'")
    assert "; route new: named twice; route worse: conditions: 'X=1': unknown keyword" in message
    with session_scope(peered, readonly=True) as session:
        assert [r.name for r in routes.list_all(session)] == ["keep"]


def test_sync_adds_changes_keeps_and_with_replace_removes(peered: Engine) -> None:
    _add(peered, name="same", conditions=("Modality=CT",))
    _add(peered, name="edit")
    _add(peered, name="gone")
    wanted = [RouteSpec(name="same", destinations=("institute-a",), conditions=("Modality=CT",)),
              RouteSpec(name="edit", destinations=("institute-b",), priority=3),
              RouteSpec(name="new", destinations=("institute-a",), enabled=False)]
    with session_scope(peered) as session:
        kept = routes.sync(session, wanted)
    assert (kept.added, kept.changed, kept.removed, kept.unchanged) == (
        ("new",), (("edit", ("priority", "destinations")),), (), ("same",))
    with session_scope(peered) as session:
        replaced = routes.sync(session, wanted, replace=True)
        assert (replaced.added, replaced.changed, replaced.removed, replaced.unchanged) == (
            (), (), ("gone",), ("same", "edit", "new"))
        assert [r.spec() for r in routes.list_all(session)] == [wanted[1], wanted[2], wanted[0]]


def test_study_facts_read_the_study_its_patient_and_its_series(engine: Engine) -> None:
    first = instance_record(modality="CT", body_part_examined="CHEST", series_number=10,
                            referring_physician_name="", source_peer="clinic-a")
    others = [
        instance_record(study_instance_uid=first.study_instance_uid, modality="SR",
                        body_part_examined="", series_number=2, source_peer="clinic-a"),
        instance_record(study_instance_uid=first.study_instance_uid, modality="CT",
                        body_part_examined="ABDOMEN", series_number=None,
                        source_peer="clinic-a"),
    ]
    with session_scope(engine) as session:
        for record in (first, *others):
            index.add_instance(session, record, [], CIPHER)
    with session_scope(engine, readonly=True) as session:
        facts = routes.study_facts(session, first.study_instance_uid)
        assert routes.study_facts(session, "2.25.404") is None
    assert facts is not None and facts.state == "active"
    values = facts.values
    assert values["ModalitiesInStudy"] == values["Modality"] == ("CT", "SR")
    assert values["BodyPartExamined"] == ("ABDOMEN", "CHEST")  # an empty value is no value
    assert values["SeriesNumber"] == ("2", "10")
    assert values["SendingPeer"] == ("clinic-a",)
    assert values["CallingAETitle"] == ("MODALITY1",)
    assert values["StudyDescription"] == ("CT chest",)
    assert values["ReferringPhysicianName"] == ()
    assert values["PatientID"] == ("PSEUDO-0001",)
    assert values["StudyDate"] == ("20260102",)
    assert values["NumberOfStudyRelatedInstances"] == ("3",)
    assert values["SOPClassesInStudy"] == ("1.2.840.10008.5.1.4.1.1.2",)
