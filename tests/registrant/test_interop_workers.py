"""``[core] workers = 2`` registering accounts at a real Kamailio registrar: txuac as a real
process tree (worker 0 by ``twist uac``, worker 1 its child) on one SQLite uacreg table.

Each worker registers its share (l_uuid partition modulo 2), from its own send socket: the
registrar ends up with exactly one binding per AOR, and ``txuac-ctl uac.reg_dump`` asked of
worker 0 lists every account, online, worker 1's included (docs/workers.rst).
"""

from __future__ import annotations

import json
import os
import socket
import sys

from twisted.internet import defer, threads, utils
from twisted.trial.unittest import TestCase

from tests.support.accounts import account_rows
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.sipp import until
from tests.support.stores import sqlite_uacreg
from tests.support.twistd import ROOT, child_environment
from tests.support.workers import all_started, start_workers, worker_pids
from txuac.registrant.worker_share import WorkerShare

ACCOUNTS = 300


class WorkersRegisterTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_every_account_registered_once_and_listed_by_worker_0(self):
        registrar = KamailioRegistrar(self, rpc_fifo=True)
        rows = account_rows(registrar, ACCOUNTS)
        path = yield sqlite_uacreg(self, rows)
        port, rpc_port = free_port(), free_port(socket.SOCK_STREAM)
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        txuac = start_workers(workdir, (
            "[core]\n"
            f'listen = ["udp:127.0.0.1:{port}"]\n'
            "workers = 2\n"
            "[uac]\n"
            f'reg_db_url = "sqlite:///{path}"\n'
            f'reg_contact_addr = "127.0.0.1:{port}"\n'
            "[rpc]\n"
            f'listen = "tcp:{rpc_port}:interface=127.0.0.1"\n'), workers=2)
        self.addCleanup(txuac.stop)
        started = yield until(lambda: all_started(txuac, 2) or not txuac.running(), 60)
        self.assertTrue(started and txuac.running(), txuac.output()[-3000:])
        self.assertEqual(len(worker_pids(txuac.pid)), 2)

        bindings: dict = {}

        @defer.inlineCallbacks
        def all_bound():
            found = yield threads.deferToThread(registrar.binding_map)
            bindings.clear()
            bindings.update(found)
            return len(found) == ACCOUNTS

        deadline = 90
        for _ in range(deadline):
            if (yield all_bound()):
                break
            yield until(lambda: False, 1)
        self.assertEqual(len(bindings), ACCOUNTS, registrar.explain(txuac.output()[-3000:]))
        contact = f"sip:{{l_uuid}}@127.0.0.1:{port}"
        self.assertEqual(bindings, {row["r_username"]: [contact.format(l_uuid=row["l_uuid"])] for row in rows})

        out, err, status = yield utils.getProcessOutputAndValue(
            sys.executable, ["-m", "txuac.admin.ctl", "--url", f"http://127.0.0.1:{rpc_port}/RPC", "--json",
                             "uac.reg_dump"], env=child_environment(), path=ROOT)
        self.assertEqual(status, 0, err.decode())
        dump = json.loads(out)
        self.assertEqual(sorted(record["l_uuid"] for record in dump), sorted(row["l_uuid"] for row in rows))
        self.assertEqual({record["state"] for record in dump}, {"online"})
        # Both workers registered a share: worker 1's accounts came over its RPC socket.
        shares = {WorkerShare(0, 2).worker_of(row["l_uuid"]) for row in rows}
        self.assertEqual(shares, {0, 1})
        self.assertNotIn("Traceback", txuac.output())
