"""Interoperability check: the `umadb` Python client from PyPI against dcb-server.

Usage: python umadb_client.py URL [API_KEY [CA_PEM]]

The client refuses to send an API key over plain HTTP, so a key needs an https:// URL and the
CA certificate that signed the server's.

Expects a fresh, empty server. Exits non-zero (with a traceback) on the first failed check and
prints "interop OK" when every check passed.
"""

import sys
import uuid

from umadb import (
    AppendCondition,
    AuthenticationError,
    Client,
    Event,
    IntegrityError,
    Query,
    QueryItem,
    ServingStatus,
    TrackingInfo,
)


def positions(events):
    return [e.position for e in events]


def main(url, api_key, ca_path):
    def connect(key):
        return Client(url, ca_path=ca_path, api_key=key)

    client = connect(api_key)
    assert client.head() is None, "a fresh server has no head"
    assert client.check_health() == ServingStatus.SERVING

    course = Query(items=[QueryItem(types=["CourseRegistered", "CourseRenamed"], tags=["course-1"])])
    first_id = uuid.uuid4()
    registered = Event(
        event_type="CourseRegistered",
        data=b'{"name": "DCB"}',
        tags=["course-1", "term-autumn"],
        uuid=first_id,
        metadata={"correlation": "c-1"},
    )
    other = Event(event_type="StudentRegistered", data=b"\x00\xffbinary", tags=["student-1"])
    assert client.append([registered, other]) == 2
    assert client.head() == 2

    # Read with a query: the event comes back whole, and the head is the store's.
    response = client.read(query=course)
    events, head = response.collect_with_head()
    assert positions(events) == [1], positions(events)
    assert head == 2, head
    got = events[0].event
    assert got.event_type == "CourseRegistered"
    assert got.data == b'{"name": "DCB"}'
    assert got.tags == ["course-1", "term-autumn"]
    assert got.uuid == first_id
    assert got.metadata == {"correlation": "c-1"}
    binary = client.read(query=Query(items=[QueryItem(tags=["student-1"])])).collect_with_head()[0]
    assert binary[0].event.data == b"\x00\xffbinary"

    # start is inclusive; backwards reads start from the top or from start, downwards.
    for i in range(3, 7):
        client.append([Event(event_type="Filler", data=b"", tags=[f"n-{i}"])])
    assert positions(client.read(start=4).collect_with_head()[0]) == [4, 5, 6]
    assert positions(client.read(backwards=True, limit=2).collect_with_head()[0]) == [6, 5]
    assert positions(client.read(start=4, backwards=True, limit=2).collect_with_head()[0]) == [4, 3]
    limited, limited_head = client.read(limit=3).collect_with_head()
    assert positions(limited) == [1, 2, 3] and limited_head == 3, (positions(limited), limited_head)

    # A decision on a stale read conflicts; the same append retried (same uuids) is idempotent.
    decided = Event(event_type="CourseRenamed", data=b"{}", tags=["course-1"], uuid=uuid.uuid4())
    condition = AppendCondition(fail_if_events_match=course, after=head)
    renamed_at = client.append([decided], condition=condition)
    assert renamed_at == 7, renamed_at
    try:
        stale = Event(event_type="CourseRenamed", data=b"{}", tags=["course-1"], uuid=uuid.uuid4())
        client.append([stale], condition=condition)
        raise AssertionError("a failed condition was not reported")
    except IntegrityError:
        pass
    assert client.append([decided], condition=condition) == renamed_at, "a retried append was not idempotent"
    assert client.head() == 7

    # Tracking info is recorded with the events and must increase.
    assert client.get_tracking_info("upstream") is None
    client.append([Event(event_type="Projected", data=b"")], tracking_info=TrackingInfo("upstream", 5))
    assert client.get_tracking_info("upstream") == 5
    try:
        client.append([Event(event_type="Projected", data=b"")], tracking_info=TrackingInfo("upstream", 5))
        raise AssertionError("a repeated tracking position was accepted")
    except IntegrityError:
        pass
    assert client.head() == 8

    # Bad input is refused, and nothing is written.
    try:
        client.append([Event(event_type="", data=b"")])
        raise AssertionError("an empty event type was accepted")
    except ValueError:
        pass
    assert client.head() == 8

    # Subscribe: the backlog after a position, then live events.
    subscription = client.subscribe(query=course, after=1)
    assert next(subscription).position == 7
    live = client.append([Event(event_type="CourseRenamed", data=b"{}", tags=["course-1"])])
    assert next(subscription).position == live
    subscription.cancel()

    if api_key:
        try:
            connect(None).head()
            raise AssertionError("a call without the API key was accepted")
        except AuthenticationError:
            pass
        try:
            connect(api_key + "-wrong").append([Event(event_type="X", data=b"")])
            raise AssertionError("a call with a wrong API key was accepted")
        except AuthenticationError:
            pass
        assert client.head() == live

    print("interop OK")


if __name__ == "__main__":
    args = sys.argv[1:] + [None, None]
    main(args[0], args[1], args[2])
