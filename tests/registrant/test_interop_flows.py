"""Lost connections, keep-alives and OPTIONS pings against a real Kamailio registrar on loopback.

- Over TCP: Kamailio answers txuac's CRLF keep-alives with a pong (RFC 5626 4.4.1), and
  when it restarts (its connection to txuac closed, its in-memory usrloc lost) every
  account is back in its usrloc within seconds, although the accounts' expiry is an hour.
- Over UDP, the figure: a registrar down 20 s that comes back with its bindings
  lost has every account again within 10 s, with OPTIONS pings on (the scenario of
  tests/registrant/test_interop_faults.py, run here with a 20 s outage).
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from tests.support.accounts import account_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.registration_faults import registrar_restart
from tests.support.services import start_uac
from tests.support.stores import insert_rows
from txuac.registrant.store import open_store
from txuac.sip.via import Address

ACCOUNTS = 50


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_until(predicate, timeout: float, interval: float = 0.1):
    """Seconds until ``predicate()`` (a value or a Deferred) is true; None at ``timeout``."""
    start = reactor.seconds()
    while True:
        done = yield defer.maybeDeferred(predicate)
        if done:
            return reactor.seconds() - start
        if reactor.seconds() - start > timeout:
            return None
        yield sleep(interval)


class TCPRegistrarTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_registrar_restart_over_tcp_reregisters_at_once(self):
        registrar = KamailioRegistrar(self, tcp=True)
        rows = account_rows(registrar, ACCOUNTS)
        for row in rows:
            row.update(auth_proxy=registrar.uri("tcp"), expires=3600)
        path = os.path.abspath(self.mktemp()) + ".sqlite"
        store = open_store(f"sqlite:///{path}", reactor)
        yield store.open()
        yield store.close()
        connection = sqlite3.connect(path)
        insert_rows(connection, rows, "?")
        connection.close()
        port = free_port()
        service = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"], "timer_t1": 100},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{port}",
                    "reg_keepalive_interval": 1, "reg_retry_interval": 1},
        })
        registrant = service.registrant
        peer = Address("tcp", "127.0.0.1", registrar.port)

        def all_in_usrloc():
            return registrar.contact_count_async().addCallback(lambda count: count == ACCOUNTS)

        took = yield wait_until(lambda: registrant.counters()["regactive"] == ACCOUNTS, 60)
        self.assertIsNotNone(took, f"not all online: {registrant.counters()}")
        took = yield wait_until(all_in_usrloc, 30)
        self.assertIsNotNone(took, registrar.explain("usrloc before the restart"))
        self.assertEqual(len(registrant.flows.accounts_on(peer)), ACCOUNTS, "every REGISTER went over TCP")

        # RFC 5626 4.4.1: Kamailio answers our pings (every 0.8-1 s here) with a pong.
        took = yield wait_until(lambda: service.stack.pool.answers_pings(peer), 10)
        self.assertIsNotNone(took, "Kamailio never answered a CRLF keep-alive")

        # The new Kamailio starts with an empty usrloc: whatever it holds was registered to it.
        yield threads.deferToThread(registrar.restart)
        restarted = reactor.seconds()
        took = yield wait_until(all_in_usrloc, 20, interval=0.05)
        print(f"\n{ACCOUNTS} accounts (expires 3600) back in Kamailio's usrloc "
              f"{took if took is None else round(took, 2)} s after its restart over TCP")
        self.assertIsNotNone(took, registrar.explain(f"usrloc after the restart ({registrant.counters()})"))
        self.assertLess(reactor.seconds() - restarted, 10.0)
        self.assertEqual(registrant.counters()["regdisabled"], 0)


class OptionsPingFigureTests(TestCase):
    timeout = 150

    @defer.inlineCallbacks
    def test_registrar_down_20_s_and_back_without_bindings(self):
        """The figure: every account back within 10 s of the restart, pings every 2 s."""
        figure = yield registrar_restart(self, accounts=200, down=20.0, target=10.0, ping_interval=2,
                                         core={"timer_t1": 100})
        print(f"\n{figure}")
        self.assertTrue(figure.met, str(figure))
