"""RegistrantService without a reactor: ``ServiceTestCase`` starts one on a task.Clock with a
stack that records every REGISTER for the test to answer (``FakeStack``) and a store in
memory (``FakeStore``)."""

from __future__ import annotations

import gc
import random

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support.accounts import make_row
from txuac.errors import AccountExists, TransactionTimeout
from txuac.net.stack import ClientRequest
from txuac.registrant.service import RegistrantService
from txuac.registrant.settings import RegistrantSettings
from txuac.sip import make_response, parse_message


TICK = RegistrantService.TICK


CONTACT_ADDR = "192.0.2.10:5060"


REALM = "sip.provider.example"


class Sent:
    """One REGISTER handed to the fake stack, with the ClientRequest it returned (``handle``:
    a test sets its ``origin`` before answering, as SIPStack does)."""

    def __init__(self, request, target, handle, at, t2=None):
        self.request = request
        self.target = target
        self.handle = handle
        self.at = at
        self.t2 = t2  # the retransmission cap asked of the stack

    @property
    def deferred(self):
        return self.handle.deferred

    @property
    def expires(self) -> int:
        return self.request.expires

    @property
    def contact_user(self) -> str:
        return self.request.contacts[0].uri.user

    def __repr__(self):
        return f"<Sent {self.request.call_id} CSeq {self.request.cseq} Expires {self.expires} at {self.at}>"


class FakeStack:
    """Records every request; the test answers each through its Deferred."""

    def __init__(self, clock):
        self.clock = clock
        self.sent: list[Sent] = []
        self.sources: list = []  # the ``source`` of each request, in order

    def add_connection_lost_observer(self, observer):
        pass  # no connections here

    def remove_connection_lost_observer(self, observer):
        pass

    def set_keepalive_interval(self, peer, seconds):
        pass

    def start_request(self, request, target=None, on_provisional=None, source=None, t2=None, on_final=None):
        handle = ClientRequest()
        # What goes on the wire: the request must survive serialization.
        parse_message(bytes(request))
        self.sent.append(Sent(request, target, handle, self.clock.seconds(), t2))
        self.sources.append(source)
        if on_final is not None:  # as SIPStack: the outcome and the handle, once
            handle.deferred.addBoth(on_final, handle)
        return handle

    def send_request(self, request, target=None, on_provisional=None, source=None, t2=None):
        return self.start_request(request, target, on_provisional, source, t2).deferred

    def pending(self) -> list[Sent]:
        return [s for s in self.sent if not s.deferred.called]

    def answer(self, sent: Sent, status: int, *headers, reason=None) -> None:
        response = make_response(sent.request, status, reason, to_tag="reg-tag", extra_headers=list(headers))
        sent.deferred.callback(parse_message(bytes(response)))

    def ok(self, sent: Sent, expires: int | None = None, contact: str | None = None, *headers) -> None:
        """200 listing the contact we sent with ``expires`` (default: what we asked for)."""
        if contact is None:
            contact = sent.request.headers.get("Contact")
        granted = sent.expires if expires is None else expires
        self.answer(sent, 200, ("Contact", f"{contact};expires={granted}"), *headers)

    def challenge(self, sent: Sent, realm: str = REALM, nonce: str = "nonce-1", status: int = 401) -> None:
        name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
        self.answer(sent, status, (name, f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'))

    def timeout(self, sent: Sent) -> None:
        sent.deferred.errback(TransactionTimeout("Timer F fired"))


class FakeStore:
    """The store interface in memory: rows by l_uuid, every call a fired Deferred."""

    url = "memory://uacreg"

    def __init__(self, rows=()):
        self.rows = {row["l_uuid"]: dict(row) for row in rows}
        self.opened = False
        self.closed = False
        self.loads = 0
        self.many_loads: list[frozenset[str]] = []  # what load_many was asked for
        self.rows_read = 0  # rows load_all and load_many returned, in all

    def open(self):
        self.opened = True
        return defer.succeed(None)

    def load_all(self):
        self.loads += 1
        self.rows_read += len(self.rows)
        return defer.succeed([dict(row) for row in self.rows.values()])

    def load_keys(self):
        return defer.succeed(list(self.rows))

    def load_one(self, l_uuid):
        row = self.rows.get(l_uuid)
        return defer.succeed(dict(row) if row is not None else None)

    def load_many(self, l_uuids):
        self.many_loads.append(frozenset(l_uuids))
        rows = [dict(self.rows[l_uuid]) for l_uuid in sorted(l_uuids) if l_uuid in self.rows]
        self.rows_read += len(rows)
        return defer.succeed(rows)

    def insert_row(self, row):
        if row["l_uuid"] in self.rows:
            return defer.fail(AccountExists(f"{row['l_uuid']!r} is there already"))
        self.rows[row["l_uuid"]] = dict(row)
        return defer.succeed(None)

    def delete_row(self, l_uuid):
        return defer.succeed(self.rows.pop(l_uuid, None) is not None)

    def close(self):
        self.closed = True
        return defer.succeed(None)


class ServiceTestCase(SynchronousTestCase):
    """Starts a RegistrantService on a Clock with a fake stack (``stack_class``) and store."""

    stack_class = FakeStack

    def start(self, rows=None, seed: int = 0, store=None, ownership=None, changes=None,
              **settings) -> RegistrantService:
        """``store`` (default: a FakeStore of ``rows``) is loaded by the new service;
        ``ownership``: its IAccountOwnership (default: every account); ``changes``: the
        IChangeFeed it follows (default: none)."""
        if rows is None:
            rows = [make_row("acc1")]
        settings.setdefault("reg_contact_addr", CONTACT_ADDR)
        # The probe's OPTIONS would mix with the REGISTERs these tests count: its own tests
        # (tests/registrant/test_probe.py) turn it on.
        settings.setdefault("reg_probe", False)
        self.clock = Clock()
        self.stack = self.stack_class(self.clock)
        self.store = store if store is not None else FakeStore(rows)
        self.settings = RegistrantSettings(**settings)
        self.service = RegistrantService(self.settings, self.stack, self.store, self.clock, random.Random(seed),
                                         ownership=ownership, changes=changes)
        self.events = []
        self.service.add_observer(self.events.append)
        self.successResultOf(self.service.startService())
        self.addCleanup(self._stop)
        return self.service

    def flush_scheduler_errors(self, *types):
        """Cleanup for tests of the scheduler dying: its LoopingCall Deferred fails unhandled and
        is only reported when collected, which would blame a later test."""
        def flush():
            gc.collect()
            self.flushLoggedErrors(*types)
        self.addCleanup(flush)

    def _stop(self):
        if self.service.running:
            d = self.service.stopService()
            for sent in self.stack.pending():
                sent.deferred.errback(TransactionTimeout("test over"))
            self.successResultOf(d)

    def advance(self, seconds: float, step: float = TICK) -> None:
        """Move the clock by ``seconds`` in steps of ``step`` (each step is one scheduler tick)."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() + step < end + 1e-9:
            self.clock.advance(step)
        if end - self.clock.seconds() > 1e-9:
            self.clock.advance(end - self.clock.seconds())

    def advance_to(self, at: float, step: float = TICK) -> None:
        self.advance(at - self.clock.seconds(), step)

    def now(self) -> float:
        return self.clock.seconds()

    def record(self, l_uuid="acc1"):
        return self.service.records[l_uuid]

    def sends_between(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.stack.sent if start <= s.at < end]

    def register_online(self, l_uuid="acc1", expires=600) -> Sent:
        """Answer the pending REGISTER of ``l_uuid`` with 200 granting ``expires``."""
        sent = [s for s in self.stack.pending() if s.contact_user == l_uuid][-1]
        self.stack.ok(sent, expires)
        self.assertEqual(self.service.status(l_uuid), 1)
        return sent
