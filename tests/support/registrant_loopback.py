"""txuac with one account on loopback UDP against a registrar of the test's choice (SIPp or a
fake), its accounts in an SQLite file: ``RegistrantLoopbackCase.start_uac``."""

from __future__ import annotations

import sqlite3

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.support.accounts import account_rows
from tests.support.peers import free_port
from tests.support.registration_events import EventLog
from tests.support.services import start_uac
from tests.support.sipp import HOST
from tests.support.sipp_registrar import T1_MS
from tests.support.stores import sqlite_uacreg


class RegistrantLoopbackCase(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def start_uac(self, registrar, expires: int = 60, ext_rows=(), **uac):
        """txuac with one account whose auth_proxy is ``registrar`` (``ext_rows``: rows of our
        own table uacreg_txuac); its RegistrantService."""
        rows = account_rows(registrar, 1)
        rows[0]["expires"] = expires
        path = self.db_path = yield sqlite_uacreg(self, rows)
        connection = sqlite3.connect(path)
        for row in ext_rows:  # the table is made when the store first opens
            connection.execute(f"INSERT INTO uacreg_txuac ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                               tuple(row.values()))
        connection.commit()
        connection.close()
        self.sip_port = free_port()
        service = start_uac(self, {
            "core": {"listen": [f"udp:{HOST}:{self.sip_port}"], "timer_t1": T1_MS},
            "uac": dict({"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"{HOST}:{self.sip_port}"}, **uac),
        })
        self.events = EventLog(service.registrant)
        return service.registrant
