"""The bring-up and failure summary lines, from plain records and events on a task.Clock."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.accounts import uacreg_rows
from tests.support.peers import free_port
from tests.support.services import start_uac, wait_for_store
from tests.support.stores import sqlite_uacreg
from txuac.admin.uac_rpc import UACMethods
from txuac.registrant.bringup import BringUpReport, failing_text
from txuac.registrant.record import Flag, State, record_from_row
from txuac.registrant.service import RegistrationEvent


class FakeRegistrant:
    def __init__(self, clock, records):
        self.clock = clock
        self.records = {record.l_uuid: record for record in records}
        self.observers = []

    def now(self) -> float:
        return self.clock.seconds()

    def add_observer(self, observer):
        self.observers.append(observer)


def accounts(count: int, auth_proxy: str = "sip:reg.example.com", start: int = 0) -> list:
    return [record_from_row(row, 0.0) for row in uacreg_rows(count, auth_proxy, start=start)]


class BringUpReportTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.records = accounts(4) + accounts(2, "sip:other.example.com", start=4)
        self.records[5].flags = Flag.DISABLED  # not expected online
        self.registrant = FakeRegistrant(self.clock, self.records)
        self.report = BringUpReport(self.registrant, self.clock, bound=30.0, interval=60.0)
        self.report.startService()
        self.addCleanup(self.report.stopService)
        self.lines: list[str] = []

        def observe(event):
            if event.get("log_namespace") == "txuac.registrant.bringup":
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def online(self, record):
        previous = record.state(self.clock.seconds())
        record.flags = Flag.ONLINE
        record.expires_at = self.clock.seconds() + 600
        self.emit(record, previous)

    def fail(self, record, reason: str):
        previous = record.state(self.clock.seconds())
        record.flags = 0
        record.last_failure = reason
        self.emit(record, previous)

    def emit(self, record, previous):
        event = RegistrationEvent(record.l_uuid, record.state(self.clock.seconds()), previous, "", None,
                                  self.clock.seconds())
        for observer in self.registrant.observers:
            observer(event)

    def test_all_online_is_one_line(self):
        self.report.begin()
        self.clock.advance(1.2)
        for record in self.records[:5]:
            self.online(record)
        self.assertEqual(self.lines, ["5 of 5 online in 1.2 s"])
        self.clock.advance(60)  # nothing failing: no summary
        self.assertEqual(self.lines, ["5 of 5 online in 1.2 s"])

    def test_after_the_bound_who_fails_and_why(self):
        self.report.begin()
        for record in self.records[:3]:
            self.online(record)
        self.fail(self.records[3], "403 Forbidden")
        self.fail(self.records[4], "no answer (timeout)")
        self.clock.advance(29)
        self.assertEqual(self.lines, [])
        self.clock.advance(1)
        self.assertEqual(self.lines, ["3 of 5 online after 30 s; 2 failing: 403 Forbidden at sip:reg.example.com (1), "
                                      "no answer (timeout) at sip:other.example.com (1)"])
        self.online(self.records[3])  # late: no second bring-up line
        self.assertEqual(len(self.lines), 1)

    def test_a_summary_while_accounts_fail(self):
        self.report.begin()
        self.fail(self.records[0], "403 Forbidden")
        self.fail(self.records[1], "403 Forbidden")
        self.clock.advance(60)
        self.assertIn("2 of 6 accounts failing: 403 Forbidden at sip:reg.example.com (2)", self.lines)
        del self.lines[:]
        for record in self.records[:2]:
            self.online(record)
        self.clock.advance(60)
        self.assertFalse([line for line in self.lines if "failing" in line])

    def test_a_reload_arms_again(self):
        self.report.begin()
        for record in self.records[:5]:
            self.online(record)
        self.registrant.records.update({r.l_uuid: r for r in accounts(2, start=10)})
        self.clock.advance(5)
        self.report.arm()
        for record in list(self.registrant.records.values())[-2:]:
            self.online(record)
        self.assertEqual(self.lines[-1], "7 of 7 online in 0.0 s")

    def test_nothing_before_begin_or_after_stop(self):
        self.online(self.records[0])
        self.report.stopService()
        self.report.begin()
        self.clock.advance(120)
        self.assertEqual(self.lines, [])

    def test_failing_text_names_the_largest_groups(self):
        records = accounts(9)
        for number, record in enumerate(records):
            record.last_failure = f"50{number % 3} Server Error" if number < 6 else f"reason {number}"
        count, text = failing_text(records, 0.0, shown=3)
        self.assertEqual(count, 9)
        self.assertEqual(text, "500 Server Error at sip:reg.example.com (2), 501 Server Error at "
                               "sip:reg.example.com (2), 502 Server Error at sip:reg.example.com (2), "
                               "3 more in 3 other group(s)")
        self.assertEqual(State.FAILED, records[0].state(0.0))


class WiringTests(TestCase):
    """UACService starts the report once its accounts are loaded and stops it with itself."""

    @defer.inlineCallbacks
    def test_the_line_after_the_first_load(self):
        lines: list[str] = []

        def observe(event):
            if event.get("log_namespace") == "txuac.registrant.bringup":
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        path = yield sqlite_uacreg(self, uacreg_rows(2, "sip:127.0.0.1:9", flags=1))  # both disabled
        port = free_port()
        uac = start_uac(self, {"core": {"listen": [f"udp:127.0.0.1:{port}"]},
                               "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{port}"}})
        yield wait_for_store(uac)
        self.assertEqual(lines, ["0 of 0 online in 0.0 s"])
        self.assertTrue(uac.bringup.running)
        yield UACMethods(uac, reactor).reg_reload()  # uac.reg_reload arms it again
        self.assertEqual(lines, ["0 of 0 online in 0.0 s"] * 2)
        yield uac.stopService()
        self.assertFalse(uac.bringup.running)
