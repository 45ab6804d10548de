"""``kamctl rpc`` (the jsonrpcs FIFO, with a kamctlrc naming it) against txuac's [rpc]
jsonrpc_fifo, side by side with a real Kamailio's jsonrpcs FIFO over the same uacreg rows:
the printed lines, the result's field names and order, the errors; and a 10 MB line on
the FIFO, after which kamctl is still answered."""

from __future__ import annotations

import json
import os

from twisted.internet import defer, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.kamailio import UAC_CONFIG, KamailioRegistrar
from tests.support.kamtools import kamailio_56_copy, kamctl_home, kamctl_rpc, short_dir
from tests.support.peers import free_port
from tests.support.services import start_uac, wait_for_store
from tests.support.stores import sqlite_uacreg

ROWS = [
    {"l_uuid": "acc1", "l_username": "alice", "l_domain": "pbx.example.com", "r_username": "alice",
     "r_domain": "sip.example.com", "realm": "sip.example.com", "auth_username": "alice", "auth_password": "secret",
     "auth_ha1": "", "auth_proxy": "sip:127.0.0.1:9", "expires": 600, "flags": 1, "reg_delay": 0, "socket": "",
     "contact_addr": "127.0.0.1:5099"},
]


class KamctlTests(TestCase):

    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.warnings = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)
        directory = short_dir(self)
        path = yield sqlite_uacreg(self, ROWS, os.path.join(directory, "uacreg.sqlite"))
        self.fifo = os.path.join(directory, "txuac_rpc.fifo")
        sip_port = free_port()
        self.uac = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{sip_port}"]},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}"},
            "rpc": {"enabled": False, "jsonrpc_fifo": self.fifo},
        })
        yield wait_for_store(self.uac)
        self.home = kamctl_home(short_dir(self), self.fifo)
        kamailio_fifo = os.path.join(directory, "kamailio_rpc.fifo")
        self.kamailio = KamailioRegistrar(self, config=UAC_CONFIG, defines={
            "DB_URL": f'"sqlite:///{kamailio_56_copy(path, directory)}"',
            "CONTACT_ADDR": f'"127.0.0.1:{free_port()}"',
            "RPC_FIFO": f'"{kamailio_fifo}"',
        })
        self.kamailio_home = kamctl_home(short_dir(self), kamailio_fifo)

    def observe(self, event):
        if event.get("log_level") == LogLevel.warn and "FIFO" in formatEvent(event):
            self.warnings.append(formatEvent(event))

    @defer.inlineCallbacks
    def both(self, *args: str):
        ours = yield kamctl_rpc(self.home, *args)
        theirs = yield kamctl_rpc(self.kamailio_home, *args)
        return ours, theirs

    def test_fifo_mode(self):
        self.assertEqual(os.stat(self.fifo).st_mode & 0o777, 0o660)

    @defer.inlineCallbacks
    def test_reg_info_lines(self):
        ours, theirs = yield self.both("uac.reg_info", "l_uuid", "acc1")
        mine, kamailio = json.loads(ours)["result"], json.loads(theirs)["result"]
        self.assertEqual(list(mine)[:len(kamailio)], list(kamailio), ours)
        # Line by line as Kamailio's: the same layout for the fields whose values are the same.
        for name in ("l_uuid", "l_username", "realm", "auth_proxy", "expires", "flags", "reg_delay", "contact_addr"):
            line = [text for text in theirs.splitlines() if text.lstrip().startswith(f'"{name}":')]
            self.assertIn(line[0], ours.splitlines(), name)
        self.assertEqual(ours.splitlines()[:3], theirs.splitlines()[:3])

    @defer.inlineCallbacks
    def test_reg_dump_is_an_array_of_the_records(self):
        ours, theirs = yield self.both("uac.reg_dump")
        mine, kamailio = json.loads(ours)["result"], json.loads(theirs)["result"]
        self.assertEqual([record["l_uuid"] for record in mine], [record["l_uuid"] for record in kamailio])
        self.assertEqual(list(mine[0])[:len(kamailio[0])], list(kamailio[0]))

    @defer.inlineCallbacks
    def test_errors(self):
        for args in (("uac.reg_info", "l_uuid", "nobody"), ("uac.reg_info", "l_uuid"),
                     ("uac.reg_info", "x_attr", "acc1")):
            ours, theirs = yield self.both(*args)
            self.assertEqual(json.loads(ours)["error"], json.loads(theirs)["error"], args)
        ours, theirs = yield self.both("no.such_method")
        self.assertEqual(json.loads(theirs)["error"], {"code": 500, "message": "Method Not Found"})
        # txuac answers as over HTTP: the JSON-RPC code, with data naming the method.
        self.assertEqual(json.loads(ours)["error"]["code"], -32601)

    @defer.inlineCallbacks
    def test_disable_enable_reload(self):
        for args in (("uac.reg_disable", "l_uuid", "acc1"), ("uac.reg_enable", "l_uuid", "acc1")):
            ours, theirs = yield self.both(*args)
            self.assertEqual(json.loads(ours)["result"], {})
            self.assertEqual(ours.splitlines()[:4], theirs.splitlines()[:4], args)
        ours = yield kamctl_rpc(self.home, "uac.reg_reload")
        self.assertEqual(json.loads(ours)["result"], {})

    @defer.inlineCallbacks
    def test_ten_megabyte_line_dropped_then_answered(self):
        def write_line():
            with open(self.fifo, "wb") as f:
                f.write(b'{"jsonrpc": "2.0", "method": "core.uptime", "params": ["' + b"x" * (10 * 1024 * 1024)
                        + b'"], "reply_name": "nobody"}\n')

        yield threads.deferToThread(write_line)
        ours = yield kamctl_rpc(self.home, "uac.reg_info", "l_uuid", "acc1")
        self.assertEqual(json.loads(ours)["result"]["l_uuid"], "acc1")
        [service] = [child for child in self.uac.control if child.name == "jsonrpc_fifo"]
        self.assertLessEqual(len(service.splitter._current), self.uac.settings.rpc.max_request_size + 1)
        dropped = [line for line in self.warnings if "dropped a request longer than" in line]
        self.assertEqual(len(dropped), 1, self.warnings)
