"""The jsonrpcs transports from Python clients: the FIFO's request splitting, reply names
and readers that never come; the datagram socket's answers, bad datagrams and a sender
that never reads; the srjson layout of the answers."""

from __future__ import annotations

import json
import os
import socket

from twisted.internet import defer, reactor, task, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.kamtools import short_dir
from tests.support.peers import free_port
from tests.support.services import start_uac
from txuac.admin import jsonrpc_fifo
from txuac.admin.jsonrpc_fifo import RequestSplitter
from txuac.admin.kamailio_json import format_document
from txuac.admin.rpc import Param
from txuac.config import ConfigError, settings_from_dict


class SplitterTests(SynchronousTestCase):

    def test_objects_cut_where_braces_balance(self):
        splitter = RequestSplitter(1000)
        data = b'junk {"a": "}{", "b": {"c": "\\"}"}}\n{"d": 1}{"e"'
        got = []
        for position in range(len(data)):
            got += splitter.feed(data[position:position + 1])
        self.assertEqual([json.loads(body) for body in got], [{"a": "}{", "b": {"c": '"}'}}, {"d": 1}])
        self.assertEqual(splitter.feed(b': 2}'), [b'{"e": 2}'])

    def test_long_object_dropped_to_the_end_of_its_line(self):
        splitter = RequestSplitter(100)
        self.assertEqual(splitter.feed(b'{"a": "' + b"x" * 5000), [])
        self.assertEqual(len(splitter._current), 0)
        self.assertEqual(splitter.feed(b'x"}  {"not": "this"}\n{"b": 1}'), [b'{"b": 1}'])
        self.assertEqual(splitter.dropped, 1)


class LayoutTests(SynchronousTestCase):

    def test_srjson_layout(self):
        document = {"jsonrpc": "2.0", "result": {"a": 1, "b": [], "c": [{"d": None}], "e": {}}, "id": 7}
        self.assertEqual(format_document(document).decode(),
                         '{\n\t"jsonrpc":\t"2.0",\n\t"result":\t{\n\t\t"a":\t1,\n\t\t"b":\t[\n\t\t],\n'
                         '\t\t"c":\t[\n\t\t\t{\n\t\t\t\t"d":\tnull\n\t\t\t}\n\t\t],\n\t\t"e":\t{\n\t\t}\n\t},\n'
                         '\t"id":\t7\n}\n')


class SettingsTests(SynchronousTestCase):

    def test_addresses_and_modes(self):
        rpc = settings_from_dict({"rpc": {"binrpc": "tcp:127.0.0.1:2049", "binrpc_mode": "0660",
                                          "jsonrpc_socket": "unix:/run/x.sock", "jsonrpc_mode": 0o600}}).rpc
        self.assertEqual((rpc.binrpc, rpc.binrpc_mode, rpc.jsonrpc_mode), ("tcp:127.0.0.1:2049", 0o660, 0o600))
        for bad in ({"binrpc": "tcp:0.0.0.0:2049"}, {"binrpc": "udp:/x"}, {"jsonrpc_socket": "tcp:127.0.0.1:1"},
                    {"binrpc_mode": "rw"}, {"jsonrpc_mode": 0o1777},
                    {"jsonrpc_fifo": "/tmp/x", "jsonrpc_fifo_reply_dir": "/no/such/dir"}):
            with self.assertRaises(ConfigError, msg=bad):
                settings_from_dict({"rpc": bad})


class TransportTests(TestCase):

    timeout = 30

    def setUp(self):
        self.directory = short_dir(self)
        self.lines = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)
        self.fifo = os.path.join(self.directory, "rpc.fifo")
        self.socket_path = os.path.join(self.directory, "rpc.sock")
        self.uac = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{free_port()}"]},
            "rpc": {"enabled": False, "jsonrpc_fifo": self.fifo, "jsonrpc_fifo_reply_dir": self.directory,
                    "jsonrpc_socket": f"unix:{self.socket_path}"},
        })
        self.fifo_service = [child for child in self.uac.control if child.name == "jsonrpc_fifo"][0]

    def observe(self, event):
        if event.get("log_level") == LogLevel.warn:
            self.lines.append(formatEvent(event))

    def write_fifo(self, data: bytes):
        def write():
            with open(self.fifo, "wb") as f:
                f.write(data)
        return threads.deferToThread(write)

    @defer.inlineCallbacks
    def fifo_call(self, request: dict, name: str = "reply1"):
        reply = os.path.join(self.directory, name)
        os.mkfifo(reply)

        def read():
            with open(reply, "rb") as f:
                return f.read()

        reading = threads.deferToThread(read)
        yield self.write_fifo(json.dumps({**request, "reply_name": name}).encode() + b"\n")
        body = yield reading
        os.unlink(reply)
        return body

    @defer.inlineCallbacks
    def test_fifo_answer(self):
        body = yield self.fifo_call({"jsonrpc": "2.0", "method": "core.uptime", "id": 3})
        self.assertEqual(list(json.loads(body)["result"]), ["now", "up_since", "uptime"])
        self.assertTrue(body.startswith(b'{\n\t"jsonrpc":\t"2.0",\n'), body)

    @defer.inlineCallbacks
    def test_fifo_reply_names_with_paths_refused(self):
        victim = os.path.join(self.directory, "victim")
        with open(victim, "w") as f:
            f.write("keep")
        for name in ("../victim", "/etc/passwd", "victim", ""):
            yield self.write_fifo(json.dumps({"jsonrpc": "2.0", "method": "core.uptime", "reply_name": name,
                                              "id": 1}).encode())
        yield task.deferLater(reactor, 0.3, lambda: None)
        with open(victim) as f:
            self.assertEqual(f.read(), "keep")  # a regular file is never written
        self.assertTrue(any("without a usable reply_name" in line for line in self.lines), self.lines)
        self.assertTrue(any("not a FIFO" in line for line in self.lines), self.lines)
        self.assertEqual(self.fifo_service.pending, 0)

    @defer.inlineCallbacks
    def test_fifo_reader_that_never_opens(self):
        self.patch(jsonrpc_fifo, "OPEN_RETRIES", 3)
        os.mkfifo(os.path.join(self.directory, "absent"))
        yield self.write_fifo(json.dumps({"jsonrpc": "2.0", "method": "core.uptime", "reply_name": "absent",
                                          "id": 1}).encode())
        yield task.deferLater(reactor, 0.6, lambda: None)
        self.assertEqual(self.fifo_service.pending, 0)
        self.assertEqual(len([line for line in self.lines if "cannot answer into" in line]), 1, self.lines)
        body = yield self.fifo_call({"jsonrpc": "2.0", "method": "core.uptime", "id": 4})
        self.assertIn(b'"uptime"', body)

    @defer.inlineCallbacks
    def test_fifo_reader_that_never_reads(self):
        """A reader that opened its FIFO but does not read a large answer is dropped after the timeout."""
        self.patch(jsonrpc_fifo, "CLIENT_TIMEOUT", 0.5)
        reply = os.path.join(self.directory, "stuck")
        os.mkfifo(reply)
        reader = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        params = ["x" * 60000]
        self.fifo_service.dispatcher.register("test.big", lambda text: [text] * 5, (Param("text"),))
        yield self.write_fifo(json.dumps({"jsonrpc": "2.0", "method": "test.big", "params": params,
                                          "reply_name": "stuck", "id": 1}).encode())
        yield task.deferLater(reactor, 1.5, lambda: None)
        self.assertEqual(self.fifo_service.pending, 0)
        self.assertEqual(len([line for line in self.lines if "did not read its answer" in line]), 1, self.lines)

    def datagram_client(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client.bind(os.path.join(self.directory, f"client{len(self.lines)}{id(client)}"))
        client.settimeout(5)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_datagram_answers_and_bad_datagrams(self):
        client = self.datagram_client()
        for data, check in ((b'{"jsonrpc": "2.0", "method": "core.uptime", "id": 1}', lambda r: "result" in r),
                            (b"\xa1\x00garbage", lambda r: r["error"]["code"] == -32700),
                            (b'{"jsonrpc": "2.0", "method": "uac.reg_dump", "id": 2}',
                             lambda r: (r["error"]["code"], r["error"]["message"]) == (500, "Not enabled"))):
            client.sendto(data, self.socket_path)
            answer = yield threads.deferToThread(client.recv, 65536)
            self.assertTrue(check(json.loads(answer)), answer)

    @defer.inlineCallbacks
    def test_datagram_sender_that_never_reads(self):
        stuck = self.datagram_client()
        stuck.setblocking(False)
        for _ in range(2000):
            try:
                stuck.sendto(b'{"jsonrpc": "2.0", "method": "core.uptime", "id": 1}', self.socket_path)
            except BlockingIOError:
                yield task.deferLater(reactor, 0.01, lambda: None)
        yield task.deferLater(reactor, 0.3, lambda: None)
        other = self.datagram_client()
        other.sendto(b'{"jsonrpc": "2.0", "method": "core.version", "id": 9}', self.socket_path)
        answer = yield threads.deferToThread(other.recv, 65536)
        self.assertEqual(json.loads(answer)["id"], 9)

    def test_one_method_table_with_the_http_server(self):
        """With the HTTP server on, the other transports answer from its dispatcher."""
        uac = start_uac(self, {"core": {"listen": [f"udp:127.0.0.1:{free_port()}"]},
                               "rpc": {"listen": "tcp:0:interface=127.0.0.1",
                                       "binrpc": f"unix:{self.directory}/ctl2"}})
        [binrpc_service] = uac.control
        self.assertIs(binrpc_service.factory.dispatcher, uac.rpc.dispatcher)
        self.assertIs(self.fifo_service.dispatcher, [child for child in self.uac.control
                                                     if child.name == "jsonrpc_socket"][0].protocol.dispatcher)

    @defer.inlineCallbacks
    def test_socket_file_removed_at_stop(self):
        [service] = [child for child in self.uac.control if child.name == "jsonrpc_socket"]
        self.assertTrue(os.path.exists(self.socket_path))
        yield service.stopService()
        self.assertFalse(os.path.exists(self.socket_path))

    def test_live_socket_is_not_taken_over(self):
        from txuac.admin.local_files import clear_stale_socket
        with self.assertRaises(ConfigError):
            clear_stale_socket(self.socket_path, "test")
        stale = os.path.join(self.directory, "stale.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(stale)
        sock.close()
        clear_stale_socket(stale, "test")
        self.assertFalse(os.path.exists(stale))

