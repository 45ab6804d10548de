"""What every uacreg store keeps: the ``StoreContract`` mixin run by each backend's tests
(SQLite, PostgreSQL, MySQL), with the rows it loads (``account``, ``loaded``) and
``eventually`` to wait through a store that reconnects."""

from __future__ import annotations

import time

from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent
from zope.interface.verify import verifyObject

from txuac.errors import AccountExists, StoreError
from txuac.registrant.store import COLUMNS, EXT_COLUMNS, EXT_DEFAULTS, AccountState, IRegistrationStore


FAST_LOAD_ROWS = 500


FAST_LOAD_SECONDS = 1.0
LOAD_MANY_ROWS = 520  # more than one SELECT's worth of l_uuids (queries.LOAD_BATCH)


def account(n: int, **overrides) -> dict:
    """A full version-6 row (keys as COLUMNS)."""
    row = {
        "l_uuid": f"uuid-{n}", "l_username": f"local{n}", "l_domain": "local.example",
        "r_username": f"remote{n}", "r_domain": "sip.example.com", "realm": "sip.example.com",
        "auth_username": f"auth{n}", "auth_password": f"secret'{n}", "auth_ha1": "",
        "auth_proxy": "sip:proxy.example.com;transport=tcp", "expires": 3600, "flags": 0,
        "reg_delay": n % 7, "contact_addr": "", "socket": "udp:127.0.0.1:5060", "contact_user": f"line{n}",
    }
    row.update(overrides)
    return row


def loaded(row: dict, **ext) -> dict:
    """``row`` as a store loads it: merged with its row in our own table (defaults when none)."""
    return {**row, **EXT_DEFAULTS, **ext}


def wait(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def eventually(make_deferred, timeout: float, interval: float = 0.05):
    """The first result of ``make_deferred()`` that is not a failure, retrying for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = yield make_deferred()
            return result
        except StoreError:
            if time.monotonic() > deadline:
                raise
        yield wait(interval)


class StoreContract:
    """Mixed into a TestCase that provides make_tables(), sql() and new_store()."""

    # -- hooks ------------------------------------------------------------------------------------
    def make_tables(self, version: int, rows=(), table_version=None, with_table=True, with_version=True):
        raise NotImplementedError

    def new_store(self, **kwargs):
        raise NotImplementedError

    def execute(self, sql: str, parameters=()) -> None:
        """Run ``sql`` (placeholders %s) as an operator would, outside the store."""
        raise NotImplementedError

    def rows_of(self, sql: str) -> list[tuple[str, ...]]:
        """The rows ``sql`` selects, every value as text."""
        raise NotImplementedError

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    # -- helpers ----------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def opened(self, **kwargs):
        store = self.new_store(**kwargs)
        self.addCleanup(store.close)
        yield store.open()
        return store

    @defer.inlineCallbacks
    def assert_open_fails(self, *messages):
        store = self.new_store()
        self.addCleanup(store.close)
        failure = yield self.assertFailure(store.open(), StoreError)
        for message in messages:
            self.assertIn(message, str(failure))
        # Not left half-open: queries fail cleanly.
        yield self.assertFailure(store.load_all(), StoreError)
        return failure

    # -- tests ------------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_load_version_6(self):
        rows = [account(1), account(2, contact_user="", flags=1), account(3, auth_password="", auth_ha1="0" * 32)]
        self.make_tables(6, rows)
        store = yield self.opened()
        verifyObject(IRegistrationStore, store)
        self.assertEqual(store.table_version, 6)
        rows_loaded = yield store.load_all()
        self.assertEqual(sorted(rows_loaded, key=lambda r: r["l_uuid"]), [loaded(row) for row in rows])
        for record in rows_loaded:
            self.assertEqual(tuple(record), COLUMNS + EXT_COLUMNS)

    @defer.inlineCallbacks
    def test_load_version_5(self):
        rows = [account(1), account(2)]
        self.make_tables(5, rows)
        store = yield self.opened()
        self.assertEqual(store.table_version, 5)
        rows_loaded = yield store.load_all()
        expected = [loaded(row, contact_user="") for row in rows]
        self.assertEqual(sorted(rows_loaded, key=lambda r: r["l_uuid"]), expected)
        one = yield store.load_one("uuid-2")
        self.assertEqual(one, expected[1])

    @defer.inlineCallbacks
    def test_load_one(self):
        self.make_tables(6, [account(1), account(2)])
        store = yield self.opened()
        self.assertEqual((yield store.load_one("uuid-2")), loaded(account(2)))
        self.assertIsNone((yield store.load_one("uuid-404")))
        self.assertIsNone((yield store.load_one("' OR '1'='1")))

    @defer.inlineCallbacks
    def test_load_many(self):
        """Rows asked for in several SELECTs (more than one batch of parameters), the missing left out."""
        self.make_tables(6, [account(n) for n in range(LOAD_MANY_ROWS)])
        store = yield self.opened()
        present = {f"uuid-{n}" for n in range(1, LOAD_MANY_ROWS)}
        rows = yield store.load_many(present | {"uuid-9999", "' OR '1'='1"})
        self.assertEqual(sorted(row["l_uuid"] for row in rows), sorted(present))
        self.assertIn(loaded(account(7)), list(rows))
        self.assertEqual(list((yield store.load_many([]))), [])

    @defer.inlineCallbacks
    def test_load_keys(self):
        """Only the l_uuids, of every row (version 5 and 6 alike)."""
        self.make_tables(5, [account(n) for n in (1, 2, 3)])
        store = yield self.opened()
        self.assertEqual(sorted((yield store.load_keys())), ["uuid-1", "uuid-2", "uuid-3"])
        self.execute("DELETE FROM uacreg")
        self.assertEqual((yield store.load_keys()), [])

    @defer.inlineCallbacks
    def test_empty_table(self):
        self.make_tables(6)
        store = yield self.opened()
        self.assertEqual((yield store.load_all()), [])

    @defer.inlineCallbacks
    def test_many_rows_load_fast(self):
        rows = [account(n) for n in range(FAST_LOAD_ROWS)]
        self.make_tables(6, rows)
        store = yield self.opened()
        started = time.monotonic()
        loaded = yield store.load_all()
        elapsed = time.monotonic() - started
        self.assertEqual(len(loaded), FAST_LOAD_ROWS)
        self.assertEqual({r["l_uuid"] for r in loaded}, {r["l_uuid"] for r in rows})
        self.assertLess(elapsed, FAST_LOAD_SECONDS)

    @defer.inlineCallbacks
    def test_refuses_unsupported_versions(self):
        self.make_tables(6, [account(1)], table_version=4)
        yield self.assert_open_fails("uacreg table version 4 is not supported (5 or 6)")

    @defer.inlineCallbacks
    def test_refuses_a_future_version(self):
        self.make_tables(6, [account(1)], table_version=7)
        yield self.assert_open_fails("uacreg table version 7 is not supported (5 or 6)")

    @defer.inlineCallbacks
    def test_refuses_a_missing_table(self):
        self.make_tables(6, with_table=False)
        yield self.assert_open_fails("the uacreg table is missing", "schema")

    @defer.inlineCallbacks
    def test_refuses_a_missing_version_table(self):
        self.make_tables(6, with_version=False)
        yield self.assert_open_fails("no version table")

    @defer.inlineCallbacks
    def test_refuses_a_missing_version_row(self):
        self.make_tables(6, table_version=0)
        yield self.assert_open_fails("has no row for uacreg")

    @defer.inlineCallbacks
    def test_refuses_a_version_5_table_that_claims_6(self):
        self.make_tables(5, [account(1)], table_version=6)
        yield self.assert_open_fails("does not have the columns of version 6", "contact_user")

    @defer.inlineCallbacks
    def test_not_open(self):
        self.make_tables(6)
        store = self.new_store()
        yield self.assertFailure(store.load_all(), StoreError)
        yield self.assertFailure(store.load_one("x"), StoreError)
        yield self.assertFailure(store.load_keys(), StoreError)
        yield store.open()
        yield self.assertFailure(store.open(), StoreError)
        yield store.close()
        yield store.close()
        yield self.assertFailure(store.load_all(), StoreError)

    @defer.inlineCallbacks
    def test_reopen_after_close(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        yield store.close()
        yield store.open()
        self.assertEqual(len((yield store.load_all())), 1)

    # -- our own table beside uacreg --------------------------------------------------------------
    @defer.inlineCallbacks
    def test_our_table_is_created_once(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        self.assertEqual(store.ext_table, "uacreg_txuac")
        yield store.close()
        yield store.open()
        created = [m for m in self.messages() if m.startswith("Created the uacreg_txuac table")]
        self.assertEqual(len(created), 1, self.messages())
        self.assertEqual(self.rows_of("SELECT table_name, table_version FROM version "
                                      "WHERE table_name IN ('uacreg', 'uacreg_txuac') ORDER BY table_name"),
                         [("uacreg", "6"), ("uacreg_txuac", "1")])
        self.assertEqual(self.rows_of("SELECT count(*) FROM uacreg_txuac"), [("0",)])  # rows come with use

    @defer.inlineCallbacks
    def test_states_saved_and_loaded_merged(self):
        self.make_tables(6, [account(1), account(2), account(3)])
        store = yield self.opened()
        # An operator's settings for uuid-2 (txuac never writes these columns).
        self.execute("INSERT INTO uacreg_txuac (l_uuid, user_agent, extra_headers, from_username, outbound, "
                     "reg_id, options_ping) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     ("uuid-2", "PBX/2", "X-Tenant: 7\nX-Trunk: a b", "caller", 1, 2, 1))
        yield store.save_states([AccountState("uuid-1", "cid-1", 110, "urn:uuid:one"),
                                 AccountState("uuid-2", "cid-2", 210, "urn:uuid:two")])
        yield store.save_states([AccountState("uuid-1", "cid-1b", 160, "urn:uuid:other")])
        rows = {r["l_uuid"]: r for r in (yield store.load_all())}
        # A stored instance ID is kept (made once); Call-ID and CSeq are replaced.
        self.assertEqual(rows["uuid-1"], loaded(account(1), call_id="cid-1b", cseq=160, instance_id="urn:uuid:one"))
        self.assertEqual(rows["uuid-2"], loaded(account(2), call_id="cid-2", cseq=210, instance_id="urn:uuid:two",
                                                user_agent="PBX/2", extra_headers="X-Tenant: 7\nX-Trunk: a b",
                                                from_username="caller", outbound=1, reg_id=2, options_ping=1))
        self.assertEqual(rows["uuid-3"], loaded(account(3)))
        self.assertEqual((yield store.load_one("uuid-2")), rows["uuid-2"])
        self.assertEqual((yield store.load_one("uuid-3")), loaded(account(3)))

    @defer.inlineCallbacks
    def test_a_lower_cseq_of_the_same_call_id_is_not_written_back(self):
        """A mark below the stored one for the same Call-ID (a resumed node that lost the
        account) leaves the stored CSeq; a new Call-ID takes its own."""
        self.make_tables(6, [account(1), account(2)])
        store = yield self.opened()
        yield store.save_states([AccountState("uuid-1", "cid-1", 500, ""), AccountState("uuid-2", "cid-2", 500, "")])
        yield store.save_states([AccountState("uuid-1", "cid-1", 300, ""), AccountState("uuid-2", "cid-2b", 20, "")])
        rows = {r["l_uuid"]: (r["call_id"], r["cseq"]) for r in (yield store.load_all())}
        self.assertEqual(rows, {"uuid-1": ("cid-1", 500), "uuid-2": ("cid-2b", 20)})
        yield store.save_states([AccountState("uuid-1", "cid-1", 700, "")])
        self.assertEqual((yield store.load_one("uuid-1"))["cseq"], 700)

    @defer.inlineCallbacks
    def test_a_row_of_ours_without_uacreg_row_is_not_an_account(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        yield store.save_states([AccountState("gone", "cid", 5, "")])
        self.assertEqual([r["l_uuid"] for r in (yield store.load_all())], ["uuid-1"])
        self.assertIsNone((yield store.load_one("gone")))

    @defer.inlineCallbacks
    def test_many_states_in_one_call(self):
        self.make_tables(6, [account(1100)])
        store = yield self.opened()
        yield store.save_states([AccountState(f"uuid-{n}", f"cid-{n}", n, "") for n in range(1200)])
        self.assertEqual(self.rows_of("SELECT count(*), sum(cseq) FROM uacreg_txuac"),
                         [("1200", str(sum(range(1200))))])
        one = yield store.load_one("uuid-1100")
        self.assertEqual((one["call_id"], one["cseq"]), ("cid-1100", 1100))

    @defer.inlineCallbacks
    def test_our_table_of_another_name(self):
        self.make_tables(6, [account(1)])
        store = yield self.opened(ext_table="accounts_ext")
        yield store.save_states([AccountState("uuid-1", "cid", 7, "")])
        self.assertEqual(self.rows_of("SELECT l_uuid, call_id FROM accounts_ext"), [("uuid-1", "cid")])
        self.assertEqual(self.rows_of("SELECT count(*) FROM version WHERE table_name = 'uacreg_txuac'"), [("0",)])

    @defer.inlineCallbacks
    def test_our_table_of_an_unknown_version_is_left_alone(self):
        """A future txuac's table: read nothing from it, write nothing, say so once; the
        accounts load with the defaults."""
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        yield store.save_states([AccountState("uuid-1", "cid", 7, "")])
        yield store.close()
        self.execute("UPDATE version SET table_version = 2 WHERE table_name = 'uacreg_txuac'")
        yield store.open()
        self.assertIsNone(store.ext_table)
        warnings = [m for m in self.messages() if m.startswith("Without the uacreg_txuac table")]
        self.assertEqual(len(warnings), 1)
        self.assertIn("its version is 2", warnings[0])
        self.assertEqual((yield store.load_all()), [loaded(account(1))])
        yield store.save_states([AccountState("uuid-1", "other", 9, "")])
        self.assertEqual(self.rows_of("SELECT call_id FROM uacreg_txuac"), [("cid",)])

    @defer.inlineCallbacks
    def test_save_states_when_not_open(self):
        self.make_tables(6)
        store = self.new_store()
        yield self.assertFailure(store.save_states([AccountState("a", "b", 1, "")]), StoreError)

    # -- rows added and deleted (uac.reg_add / uac.reg_remove in a cluster) -----------------------
    @defer.inlineCallbacks
    def test_insert_row(self):
        """Every column written as given; a value is a bound parameter, never SQL."""
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        odd = account(2, l_uuid="x'); DELETE FROM uacreg; --", auth_password="p'\\%s?", flags=1, expires=60)
        yield store.insert_row(odd)
        without_contact_user = {k: v for k, v in account(3).items() if k != "contact_user"}
        yield store.insert_row(without_contact_user)
        self.assertEqual((yield store.load_one(odd["l_uuid"])), loaded(odd))
        self.assertEqual((yield store.load_one("uuid-3")), loaded(account(3, contact_user="")))
        self.assertEqual(len((yield store.load_all())), 3)
        self.assertEqual(store.errors, 0)

    @defer.inlineCallbacks
    def test_insert_row_of_an_l_uuid_there_already(self):
        """AccountExists, the row there unchanged; not counted as a failing store."""
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        failure = yield self.assertFailure(store.insert_row(account(1, l_username="other")), AccountExists)
        self.assertIn("'uuid-1'", str(failure))
        self.assertEqual((yield store.load_all()), [loaded(account(1))])
        self.assertEqual(store.errors, 0)

    @defer.inlineCallbacks
    def test_insert_row_meeting_the_unique_index(self):
        """A row added by someone else between the check and the INSERT: the table's unique
        index refuses the second, which is AccountExists too."""
        self.make_tables(6, [account(1)])
        store = yield self.opened()
        store._exists = lambda l_uuid: defer.succeed(False)
        yield self.assertFailure(store.insert_row(account(1, l_username="other")), AccountExists)
        self.assertEqual((yield store.load_all()), [loaded(account(1))])

    @defer.inlineCallbacks
    def test_insert_row_version_5(self):
        """The columns of the table's version: a contact_user it cannot hold is refused."""
        self.make_tables(5, [account(1)])
        store = yield self.opened()
        yield store.insert_row(account(2, contact_user=""))
        self.assertEqual((yield store.load_one("uuid-2")), loaded(account(2, contact_user="")))
        failure = yield self.assertFailure(store.insert_row(account(3)), StoreError)
        self.assertNotIsInstance(failure, AccountExists)
        self.assertIn("no contact_user column", str(failure))
        self.assertIsNone((yield store.load_one("uuid-3")))

    @defer.inlineCallbacks
    def test_delete_row(self):
        """True when a row went; its state in our own table stays for its return."""
        self.make_tables(6, [account(1), account(2)])
        store = yield self.opened()
        yield store.save_states([AccountState("uuid-1", "cid-1", 110, "")])
        self.assertIs((yield store.delete_row("' OR '1'='1")), False)
        self.assertIs((yield store.delete_row("uuid-1")), True)
        self.assertIs((yield store.delete_row("uuid-1")), False)
        self.assertEqual((yield store.load_all()), [loaded(account(2))])
        self.assertEqual(self.rows_of("SELECT call_id FROM uacreg_txuac WHERE l_uuid = 'uuid-1'"), [("cid-1",)])
        yield store.insert_row(account(1))
        self.assertEqual((yield store.load_one("uuid-1")), loaded(account(1), call_id="cid-1", cseq=110))

    @defer.inlineCallbacks
    def test_rows_added_and_deleted_when_not_open(self):
        self.make_tables(6)
        store = self.new_store()
        yield self.assertFailure(store.insert_row(account(1)), StoreError)
        yield self.assertFailure(store.delete_row("uuid-1"), StoreError)
