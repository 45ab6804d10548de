"""kamcmd (Kamailio's binrpc client) against txuac's [rpc] binrpc socket, side by side with
a real Kamailio whose uac module loaded the same uacreg rows: field names and order, value
types, error lines; and bad packets on the socket while kamcmd goes on working."""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, reactor, task, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.kamailio import UAC_CONFIG, KamailioRegistrar
from tests.support.kamtools import kamailio_56_copy, kamcmd, printed_structs, short_dir
from tests.support.peers import free_port
from tests.support.services import start_uac, wait_for_store
from tests.support.stores import sqlite_uacreg
from txuac.admin import binrpc

ROWS = [
    {"l_uuid": "acc1", "l_username": "alice", "l_domain": "pbx.example.com", "r_username": "alice",
     "r_domain": "sip.example.com", "realm": "sip.example.com", "auth_username": "alice", "auth_password": "secret",
     "auth_ha1": "", "auth_proxy": "sip:127.0.0.1:9", "expires": 600, "flags": 1, "reg_delay": 0, "socket": "",
     "contact_addr": "127.0.0.1:5099"},
    {"l_uuid": "acc2", "l_username": "bob", "l_domain": "pbx.example.com", "r_username": "bob",
     "r_domain": "sip.example.com", "realm": "sip.example.com", "auth_username": "bob", "auth_password": "pw2",
     "auth_ha1": "", "auth_proxy": "sip:127.0.0.1:9", "expires": 300, "flags": 1, "reg_delay": 0, "socket": "",
     "contact_addr": "127.0.0.1:5099"},
]
# Values that are the row's in both (auth_password: txuac masks it unless show_secrets).
SAME_VALUES = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username", "auth_ha1",
               "auth_proxy", "expires", "flags", "reg_delay", "contact_addr")
INTEGERS = ("expires", "flags", "diff_expires", "timer_expires", "reg_init", "reg_delay")


class KamcmdTests(TestCase):

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.audit_lines = []
        globalLogPublisher.addObserver(self.observe_audit)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe_audit)
        directory = short_dir(self)
        path = yield sqlite_uacreg(self, ROWS, os.path.join(directory, "uacreg.sqlite"))
        self.socket = f"unix:{directory}/ctl"
        sip_port = free_port()
        self.uac = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{sip_port}"]},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}"},
            "rpc": {"enabled": False, "binrpc": self.socket, "binrpc_mode": "0660"},
        })
        yield wait_for_store(self.uac)
        self.kamailio = KamailioRegistrar(self, config=UAC_CONFIG, defines={
            "DB_URL": f'"sqlite:///{kamailio_56_copy(path, directory)}"',
            "CONTACT_ADDR": f'"127.0.0.1:{free_port()}"',
            "RPC_FIFO": f'"{directory}/kamailio_rpc.fifo"',
        })
        self.kamailio_socket = f"unix:{self.kamailio.ctl_path}"
        yield self.kamailio_loaded()

    @defer.inlineCallbacks
    def kamailio_loaded(self, seconds: float = 10.0):
        """Wait until Kamailio's uac lists the rows: its ctl process may answer before the
        table is loaded (seen once on a busy machine: an empty uac.reg_dump)."""
        deadline = reactor.seconds() + seconds
        while True:
            dump = yield kamcmd(self.kamailio_socket, "uac.reg_dump")
            if len(printed_structs(dump)) == len(ROWS) or reactor.seconds() > deadline:
                return
            yield task.deferLater(reactor, 0.1, lambda: None)

    @defer.inlineCallbacks
    def both(self, *args: str):
        ours = yield kamcmd(self.socket, *args)
        theirs = yield kamcmd(self.kamailio_socket, *args)
        return ours, theirs

    def test_socket_mode(self):
        self.assertEqual(os.stat(self.socket[len("unix:"):]).st_mode & 0o777, 0o660)

    @defer.inlineCallbacks
    def test_reg_dump_fields_order_and_types(self):
        ours, theirs = yield self.both("uac.reg_dump")
        ours_structs, theirs_structs = printed_structs(ours), printed_structs(theirs)
        self.assertEqual(len(ours_structs), 2, ours)
        self.assertEqual(len(theirs_structs), 2, self.kamailio.explain(theirs))
        by_uuid = {dict(fields)["l_uuid"]: fields for fields in theirs_structs}
        for fields in ours_structs:
            kamailio_fields = by_uuid[dict(fields)["l_uuid"]]
            names = [name for name, _ in kamailio_fields]
            # Kamailio's fields, in Kamailio's order, then txuac's own.
            self.assertEqual([name for name, _ in fields][:len(names)], names, ours)
            mine, theirs_values = dict(fields), dict(kamailio_fields)
            for name in SAME_VALUES:
                self.assertEqual(mine[name], theirs_values[name], name)
            for name in INTEGERS:
                self.assertRegex(mine[name], r"^-?\d+$", name)
                self.assertRegex(theirs_values[name], r"^-?\d+$", name)
            self.assertEqual(mine["auth_password"], "********")
            self.assertEqual(theirs_values["auth_password"], dict(zip(("acc1", "acc2"), ("secret", "pw2")))[
                mine["l_uuid"]])

    @defer.inlineCallbacks
    def test_reg_info(self):
        ours, theirs = yield self.both("uac.reg_info", "l_uuid", "acc2")
        [mine], [kamailio] = printed_structs(ours), printed_structs(theirs)
        self.assertEqual(dict(mine)["l_uuid"], "acc2")
        self.assertEqual([name for name, _ in mine][:len(kamailio)], [name for name, _ in kamailio])
        self.assertEqual(ours.splitlines()[0], "{")

    @defer.inlineCallbacks
    def test_error_lines_are_kamailios(self):
        for args in (("uac.no_such_method",), ("uac.reg_info", "l_uuid", "nobody"), ("uac.reg_info", "l_uuid"),
                     ("uac.reg_info", "x_attr", "acc1"), ("uac.reg_enable", "l_uuid", "nobody"),
                     ("system.methodHelp", "no.such")):
            ours, theirs = yield self.both(*args)
            self.assertEqual(ours, theirs, args)
            self.assertTrue(ours.startswith("error: "), ours)
        ours, _ = yield self.both("uac.no_such_method")
        self.assertEqual(ours, "error: 500 - command uac.no_such_method not found\n")

    @defer.inlineCallbacks
    def test_disable_and_enable(self):
        for method, disabled in (("uac.reg_enable", False), ("uac.reg_disable", True), ("uac.reg_enable", False)):
            ours, theirs = yield self.both(method, "l_uuid", "acc1")
            self.assertEqual((ours, theirs), ("", ""), method)
            ours, theirs = yield self.both("uac.reg_info", "l_uuid", "acc1")
            for printed in (ours, theirs):
                flags = int(dict(printed_structs(printed)[0])["flags"])
                self.assertEqual(bool(flags & 1), disabled, (method, printed))
        self.assertIn("on unix:", self.audit_lines[0])  # the caller: uid and pid on the socket
        self.assertIn("called uac.reg_enable ['l_uuid', 'acc1']: ok", self.audit_lines[0])

    def observe_audit(self, event):
        if event.get("log_namespace") == "txuac.admin.audit":
            self.audit_lines.append(formatEvent(event))

    @defer.inlineCallbacks
    def test_reg_reload(self):
        ours = yield kamcmd(self.socket, "uac.reg_reload")
        self.assertEqual(ours, "")

    @defer.inlineCallbacks
    def test_list_methods_help_and_uptime(self):
        ours = yield kamcmd(self.socket, "system.listMethods")
        methods = ours.split()
        for name in ("uac.reg_dump", "uac.reg_info", "system.listMethods", "system.methodHelp", "core.uptime",
                     "core.version"):
            self.assertIn(name, methods)
        ours, theirs = yield self.both("system.methodHelp", "uac.reg_dump")
        self.assertEqual(len(ours.splitlines()), 1, ours)
        self.assertEqual(len(theirs.splitlines()), 1, theirs)
        ours, theirs = yield self.both("core.uptime")
        self.assertEqual([name for name, _ in printed_structs(ours)[0]], [name for name, _ in printed_structs(theirs)[0]])
        ours = yield kamcmd(self.socket, "core.version")
        self.assertTrue(ours.startswith("txuac "), ours)

    @defer.inlineCallbacks
    def test_bad_packets_then_kamcmd_still_answered(self):
        path = self.socket[len("unix:"):]

        def send(data: bytes, read: bool = True) -> bytes:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect(path)
            client.sendall(data)
            answer = b""
            while read:
                chunk = client.recv(65536)
                if not chunk:
                    break
                answer += chunk
            client.close()
            return answer

        cases = {
            "wrong magic": b"\xb1\x00\x01\x01\x00",
            "wrong version": b"\xa2\x00\x01\x01\x00",
            "length beyond the limit": binrpc.build_header(binrpc.REQUEST, 10 * 1024 * 1024, 1) + b"x" * 100,
            "record longer than the body": binrpc.build_header(binrpc.REQUEST, 4, 1) + b"\x91\x7fab",
        }
        for name, data in cases.items():
            answer = yield threads.deferToThread(send, data)
            header = binrpc.parse_header(answer)
            self.assertEqual(header.kind, binrpc.FAULT, name)
            code, text = binrpc.decode_values(answer[header.size:])
            self.assertEqual(code, 400, name)
            self.assertTrue(text.startswith("bad request: "), (name, text))
        # A truncated packet: the connection is closed once the client timeout passes;
        # meanwhile (and after) kamcmd is answered.
        yield threads.deferToThread(send, binrpc.build_request(1, "core.uptime", [])[:-3], False)
        ours = yield kamcmd(self.socket, "uac.reg_info", "l_uuid", "acc1")
        self.assertEqual(dict(printed_structs(ours)[0])["l_uuid"], "acc1")

    @defer.inlineCallbacks
    def test_client_that_never_reads(self):
        """A client sending requests without reading: its answers fill the socket, it is no
        longer read, and it is dropped after the timeout; others are answered meanwhile."""
        from txuac.admin import binrpc_server
        self.patch(binrpc_server, "CLIENT_TIMEOUT", 0.5)
        path = self.socket[len("unix:"):]
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(path)
        client.setblocking(False)
        request = binrpc.build_request(1, "uac.reg_dump", [])
        sent = 0
        for _ in range(3000):
            try:
                sent += client.send(request)
            except BlockingIOError:
                break
            yield task.deferLater(reactor, 0, lambda: None)
        ours = yield kamcmd(self.socket, "uac.reg_info", "l_uuid", "acc2")
        self.assertEqual(dict(printed_structs(ours)[0])["l_uuid"], "acc2")
        client.setblocking(True)
        client.settimeout(5)

        def read_to_the_end():
            received = 0
            try:
                while True:
                    chunk = client.recv(65536)
                    if not chunk:
                        return received
                    received += len(chunk)
            except ConnectionResetError:
                return received

        yield task.deferLater(reactor, 1.5, lambda: None)
        received = yield threads.deferToThread(read_to_the_end)  # socket.timeout if it were not closed
        client.close()
        self.assertGreater(sent, 0)
        self.assertLess(received, sent * 1000)


class KamcmdOverTCPTests(TestCase):
    """binrpc on loopback TCP (kamcmd -s tcp:HOST:PORT), and the socket owner setting."""

    timeout = 30

    @defer.inlineCallbacks
    def test_tcp_and_owner(self):
        directory = short_dir(self)
        path = yield sqlite_uacreg(self, ROWS, os.path.join(directory, "uacreg.sqlite"))
        port = free_port(socket.SOCK_STREAM)
        sip_port = free_port()
        uac = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{sip_port}"]},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}"},
            "rpc": {"enabled": False, "binrpc": f"tcp:127.0.0.1:{port}",
                    "jsonrpc_socket": f"unix:{directory}/rpc.sock", "jsonrpc_group": "nogroup"},
        })
        yield wait_for_store(uac)
        ours = yield kamcmd(f"tcp:127.0.0.1:{port}", "uac.reg_info", "l_uuid", "acc1")
        self.assertEqual(dict(printed_structs(ours)[0])["l_uuid"], "acc1")
        if os.geteuid() == 0:  # only root gives files away
            import grp
            self.assertEqual(os.stat(f"{directory}/rpc.sock").st_gid, grp.getgrnam("nogroup").gr_gid)
