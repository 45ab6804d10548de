"""A PostgreSQL restart while 50 accounts keep registering against a SIPp registrar.

The accounts come from a real PostgreSQL cluster; SIPp (tests/registrant/sipp/reg_200_echo.xml)
grants 4 s to every REGISTER, so each account refreshes about every 2 s. The cluster is
stopped (fast shutdown: txuac's connection is cut), left down 2 s, and started again on the
same port and data:

- no record is lost and every account stays online: the registrant's records are the same
  objects throughout, refreshes go on during the outage (counted from the observer events
  and from SIPp's own trace);
- during the outage refresh() answers -1 (the StoreError is logged, not raised) and a
  reload() that fails keeps every record;
- once the store has reconnected (in the background) refresh() answers 1 again, and a
  forced reload() answers 1 with all 50 accounts, which all get online again.
"""

from __future__ import annotations

import os

import psycopg2
from twisted.internet import defer, reactor
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.accounts import account_rows
from tests.support.peers import free_port
from tests.support.postgres import PostgresCluster
from tests.support.registration_events import EventLog
from tests.support.sipp import HOST, sleep, until
from tests.support.sipp_registrar import SIPpRegistrar
from tests.support.stores import SCHEMAS, insert_rows
from txuac.config import settings_from_dict
from txuac.errors import StoreError
from txuac.registrant.record import State
from txuac.service import UACService

log = Logger()
ACCOUNTS = 50
GRANTED = 4  # seconds the registrar grants: a refresh about every 2 s
OUTAGE = 2.0  # seconds PostgreSQL stays down
RECONNECT_TIMEOUT = 20.0  # the store retries after 1 s, 2.7 s, 5.6 s... (backoff 1.7, max 10 s)


class PostgresRestartTests(TestCase):
    timeout = 120

    def setUp(self):
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    @defer.inlineCallbacks
    def start(self):
        self.registrar = SIPpRegistrar(self, "reg_200_echo.xml", "-key", "granted", str(GRANTED))
        yield self.registrar.started()
        self.cluster = PostgresCluster(self)
        self.cluster.psql(file=os.path.join(SCHEMAS, "postgres.sql"))
        connection = psycopg2.connect(host=self.cluster.host, port=self.cluster.port, user=self.cluster.user,
                                      password=self.cluster.password, dbname=self.cluster.database)
        insert_rows(connection, account_rows(self.registrar, ACCOUNTS), "%s")
        connection.close()
        sip_port = free_port()
        self.contact_addr = f"{HOST}:{sip_port}"
        settings = settings_from_dict({
            "core": {"listen": [f"udp:{HOST}:{sip_port}"], "timer_t1": 100},
            "uac": {"reg_db_url": self.cluster.url, "reg_contact_addr": self.contact_addr,
                    "reg_retry_interval": 1, "reg_timer_interval": 1},
            "rpc": {"enabled": False},
        })
        self.service = UACService(settings)
        self.events = EventLog(self.service.registrant)
        self.service.startService()
        self.addCleanup(self.service.stopService)  # before PostgreSQL and SIPp stop (LIFO)
        return self.service.registrant

    def explain(self, message: str = "") -> str:
        counters = self.service.registrant.counters()
        tail = "\n".join(self.events.describe().splitlines()[-40:])
        return f"{message}\ncounters: {counters}\nlast events:\n{tail}\n{self.cluster.explain()}"

    @defer.inlineCallbacks
    def all_online(self, after=None, timeout: float = 15.0):
        """Wait until every account had an online event (after ``after``)."""
        online: set[str] = set()

        def count(event) -> bool:
            if event.state is State.ONLINE:
                online.add(event.l_uuid)
            return len(online) == ACCOUNTS

        yield self.events.wait(count, timeout, after, f"online event of all {ACCOUNTS} accounts")

    def online_events(self, start: float, end: float) -> list:
        return [e for e in self.events.seen if e.state is State.ONLINE and start <= e.at <= end]

    def measured(self, what: str, value) -> None:
        log.info("measured {what}: {value}", what=what, value=value)

    @defer.inlineCallbacks
    def test_restart_during_operation(self):
        registrant = yield self.start()
        yield self.all_online(timeout=20)
        records = dict(registrant.records)
        self.assertEqual(len(records), ACCOUNTS)
        self.assertEqual(registrant.counters()["regactive"], ACCOUNTS)
        # Steady state: one round of refreshes before the outage.
        mark = self.events.seen[-1]
        yield self.all_online(after=mark, timeout=2 * GRANTED)

        # --- outage -------------------------------------------------------------------------
        stopped_at = reactor.seconds()
        self.cluster.stop()
        result = yield registrant.refresh("uuid00003")
        self.assertEqual(result, -1, self.explain("refresh while PostgreSQL is down"))
        warnings = [e for e in self.logged if e.get("l_uuid") == "uuid00003"
                    and str(e.get("log_format", "")).startswith("refresh of")]
        self.assertEqual(len(warnings), 1, "the failed refresh was not logged")
        self.measured("refresh() while down logged", warnings[0]["error"])
        try:
            reloaded = yield registrant.reload(force=True)
        except StoreError as e:
            reloaded = e
        self.measured("reload() while PostgreSQL is down", repr(reloaded))
        self.assertIsInstance(reloaded, StoreError)
        self.assertEqual(registrant.records, records, self.explain("records changed by a failed reload"))
        self.assertTrue(all(registrant.records[k] is v for k, v in records.items()))
        # Down for OUTAGE seconds: every account stays online meanwhile.
        lowest = ACCOUNTS
        while reactor.seconds() < stopped_at + OUTAGE:
            lowest = min(lowest, registrant.counters()["regactive"])
            yield sleep(0.05)
        started_at = reactor.seconds()
        self.cluster.start()
        back_at = reactor.seconds()
        self.assertEqual(lowest, ACCOUNTS, self.explain("accounts went offline during the outage"))
        during = self.online_events(stopped_at, started_at)
        wire = [at for at, _ in self.registrar.registers() if stopped_at <= at <= started_at]
        self.measured("outage (stop to start)", f"{started_at - stopped_at:.3f} s")
        self.measured("refreshes answered during the outage (online events)", len(during))
        self.measured("REGISTERs SIPp received during the outage", len(wire))
        expected = int(ACCOUNTS * OUTAGE / (GRANTED / 2) * 0.6)  # about 50 at one per ~2 s each
        self.assertGreaterEqual(len(during), expected, self.explain("refreshes stopped during the outage"))
        self.assertGreaterEqual(len(wire), expected, self.explain("SIPp saw no refreshes during the outage"))
        self.assertEqual(registrant.records, records)
        self.assertTrue(all(registrant.records[k] is v for k, v in records.items()))
        self.assertEqual(registrant.counters()["regactive"], ACCOUNTS, self.explain())

        # --- the store works again ------------------------------------------------------------
        # Rows changed after the restart show that refresh() and reload() read PostgreSQL again.
        self.cluster.psql("UPDATE uacreg SET expires = 30 WHERE l_uuid = 'uuid00003'")
        self.cluster.psql("UPDATE uacreg SET expires = 45 WHERE l_uuid = 'uuid00010'")
        attempts = []

        @defer.inlineCallbacks
        def refreshed():
            attempts.append((yield registrant.refresh("uuid00003")))
            return attempts[-1] == 1

        deadline = reactor.seconds() + RECONNECT_TIMEOUT
        while not (yield refreshed()):
            self.assertLess(reactor.seconds(), deadline, self.explain(f"refresh() still {attempts[-1]}"))
            yield sleep(0.1)
        self.measured("store usable again after start()", f"{reactor.seconds() - back_at:.3f} s "
                      f"({len(attempts)} refresh() calls)")
        refreshed_record = registrant.records["uuid00003"]
        self.assertIsNot(refreshed_record, records["uuid00003"])  # reloaded from the row
        self.assertEqual(refreshed_record.expires, 30)
        mark = self.events.seen[-1]
        yield self.events.wait(lambda e: e.l_uuid == "uuid00003" and e.state is State.ONLINE, 10, mark,
                               "uuid00003 online after its refresh")
        sent = [r.headers.get("Expires") for _, r in self.registrar.registers()
                if r.headers.get("Contact") == f"<sip:uuid00003@{self.contact_addr}>"]
        self.assertEqual(sent[-1], "30")
        self.assertEqual(registrant.records["uuid00010"].expires, 600)  # not refreshed: the old row

        mark = self.events.seen[-1]
        result = yield registrant.reload(force=True)
        self.assertEqual(result, 1)
        self.assertEqual(sorted(registrant.records), sorted(records))
        self.assertEqual(registrant.records["uuid00010"].expires, 45)
        self.assertEqual(registrant.records["uuid00003"].expires, 30)
        yield self.all_online(after=mark, timeout=15)
        self.assertEqual(registrant.counters()["regtotal"], ACCOUNTS)
        ok = yield until(lambda: registrant.counters()["regactive"] == ACCOUNTS, 5, 0.05)
        self.assertTrue(ok, self.explain("not every account online after the reload"))

    @defer.inlineCallbacks
    def test_immediate_restart_while_idle(self):
        """restart() in one go (stop and start without the reactor running in between): the
        store notices the old connection is gone, reconnects, and reload() works again."""
        registrant = yield self.start()
        yield self.all_online(timeout=20)
        records = dict(registrant.records)
        restarted_at = reactor.seconds()
        self.cluster.restart()
        results = []
        deadline = reactor.seconds() + RECONNECT_TIMEOUT
        while True:
            mark = self.events.seen[-1]
            try:
                results.append((yield registrant.reload(force=True)))
            except StoreError as e:
                results.append(e)
                # A failed reload keeps every record, and their registrations.
                self.assertEqual(registrant.records, records)
                self.assertTrue(all(registrant.records[k] is v for k, v in records.items()))
            if results[-1] == 1:
                break
            self.assertLess(reactor.seconds(), deadline, self.explain(f"reload() still failing: {results[-1]!r}"))
            yield sleep(0.1)
        self.measured("reload() working again after restart()",
                      f"{reactor.seconds() - restarted_at:.3f} s ({len(results)} calls, "
                      f"first: {results[0]!r})")
        self.assertEqual(sorted(registrant.records), sorted(records))
        yield self.all_online(after=mark, timeout=15)
        self.assertEqual(registrant.counters()["regtotal"], ACCOUNTS)
