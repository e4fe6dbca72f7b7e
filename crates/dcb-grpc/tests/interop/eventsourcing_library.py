"""Interoperability check: the Python `eventsourcing` library, through its UmaDB persistence
module `eventsourcing-umadb` (both from PyPI), against dcb-server.

Usage: python eventsourcing_library.py PATH_TO_DCB_SERVER

Runs the library's own test cases for recorders (its DCB recorder, aggregate recorder and
application recorder tests) and two small applications of ours (aggregates, and DCB enduring
objects, each with a stale save that must conflict), each against a fresh dcb-server over a file
store in a temporary directory. Prints "eventsourcing interop OK" when everything passed.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import eventsourcing.dcb.tests as dcb_tests
import eventsourcing.tests.persistence as persistence_tests
from eventsourcing import pydantic
from eventsourcing.domain import triggers
from eventsourcing.persistence import IntegrityError
from eventsourcing_umadb.recorders import (
    UmaDbAggregateRecorder,
    UmaDbApplicationRecorder,
    UmaDbDcbRecorder,
)
from umadb import Client

SERVER = sys.argv[1]


class FreshServer:
    """Starts dcb-server over an empty file store before each test, stops it after."""

    def setUp(self):
        self.store_dir = tempfile.mkdtemp(prefix="dcb-eventsourcing-interop-")
        self.server = subprocess.Popen(
            [SERVER, "--listen", "127.0.0.1:0", "--store", self.store_dir],
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in self.server.stderr:
            found = re.search(r"address=(\S+)", line)
            if found:
                self.url = "http://" + found.group(1)
                break
        else:
            raise RuntimeError("dcb-server exited before serving")
        # Keep draining the log so that the server never blocks on a full pipe.
        threading.Thread(target=self.server.stderr.read, daemon=True).start()
        os.environ["PERSISTENCE_MODULE"] = "eventsourcing_umadb"
        os.environ["UMADB_URI"] = self.url
        super().setUp()

    def tearDown(self):
        super().tearDown()
        self.server.terminate()
        assert self.server.wait(timeout=10) == 0, "dcb-server did not stop cleanly"
        shutil.rmtree(self.store_dir, ignore_errors=True)


class DcbRecorder(FreshServer, dcb_tests.DcbRecorderTestCase):
    def test_append_read(self):
        self._test_append_read(UmaDbDcbRecorder(Client(url=self.url)))

    def test_append_subscribe(self):
        self._test_append_subscribe(UmaDbDcbRecorder(Client(url=self.url)))


class AggregateRecorder(FreshServer, persistence_tests.AggregateRecorderTestCase):
    # A re-sent append whose events carry the same uuids is answered with its original position
    # (the protocol's idempotent retry), which this test case expects to be declared.
    recorder_supports_idempotent_appends = True

    def create_recorder(self):
        return UmaDbAggregateRecorder(umadb=Client(url=self.url))

    test_performance = unittest.skip("timing only")(lambda self: None)


class ApplicationRecorder(FreshServer, persistence_tests.ApplicationRecorderTestCase):
    def create_recorder(self):
        return UmaDbApplicationRecorder(Client(url=self.url))

    test_performance = unittest.skip("timing only")(lambda self: None)
    test_concurrent_throughput = unittest.skip("timing only")(lambda self: None)


class Tally(pydantic.Aggregate):
    class Opened(pydantic.Decision):
        name: str

    class Added(pydantic.Decision):
        amount: int

    @triggers(Opened)
    def __init__(self, *, name: str) -> None:
        self.name = name
        self.total = 0

    @triggers(Added)
    def add(self, amount: int) -> None:
        self.total += amount


class Tallies(pydantic.AggregatesApplication):
    pass


class Shelf(pydantic.EnduringObject):
    class Put(pydantic.Decision):
        shelf_id: str
        label: str

    class Stocked(pydantic.Decision):
        shelf_id: str
        item: str

    @triggers(Put)
    def __init__(self, *, label: str) -> None:
        self.label = label
        self.items: list[str] = []

    @triggers(Stocked)
    def stock(self, item: str) -> None:
        self.items.append(item)


class Warehouse(pydantic.DcbApplication):
    pass


class Applications(FreshServer, unittest.TestCase):
    def test_aggregates_and_a_stale_save(self):
        app = Tallies()
        tally = Tally(name="visits")
        tally.add(2)
        app.save(tally)
        first = app.repository.get(tally.id, Tally)
        second = app.repository.get(tally.id, Tally)
        self.assertEqual(first.total, 2)
        first.add(3)
        app.save(first)
        second.add(5)
        with self.assertRaises(IntegrityError):
            app.save(second)
        self.assertEqual(app.repository.get(tally.id, Tally).total, 5)
        self.assertEqual(len(app.notification_log.select(start=1, limit=10)), 3)

    def test_enduring_objects_and_a_stale_save(self):
        app = Warehouse()
        shelf = Shelf(label="top")
        app.repository.save(shelf)
        first = app.repository.get(shelf.id, Shelf)
        second = app.repository.get(shelf.id, Shelf)
        first.stock("jar")
        app.repository.save(first)
        second.stock("box")
        with self.assertRaises(IntegrityError):
            app.repository.save(second)
        self.assertEqual(app.repository.get(shelf.id, Shelf).items, ["jar"])


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    if not result.wasSuccessful() or result.testsRun == 0:
        sys.exit(1)
    print("eventsourcing interop OK")
