"""binrpc: the codec (bytes as Kamailio's ctl module writes and reads them) and the server
protocol on an in-memory transport: bad packets, unfinished packets and clients that do
not read their replies."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txuac.admin import binrpc
from txuac.admin.binrpc_server import CLIENT_TIMEOUT, MAX_CONNECTIONS, BinRPCProtocol, BinRPCServer, fault_of
from txuac.admin.rpc import Dispatcher, Param, RPCError
from txuac.config import RPCSettings


class RecordTests(SynchronousTestCase):
    """The examples of K:src/modules/ctl/binrpc.h."""

    def test_strings(self):
        self.assertEqual(binrpc.encode_value("abcdef"), b"\x71abcdef\x00")
        self.assertEqual(binrpc.encode_value("abcdefhij"), b"\x91\x0aabcdefhij\x00")
        self.assertEqual(binrpc.encode_value(""), b"\x11\x00")

    def test_integers_in_the_fewest_octets(self):
        self.assertEqual(binrpc.encode_value(0x0B), b"\x10\x0b")
        self.assertEqual(binrpc.encode_value(0), b"\x00")
        self.assertEqual(binrpc.encode_value(600), b"\x20\x02\x58")
        self.assertEqual(binrpc.encode_value(-1), b"\x40\xff\xff\xff\xff")

    def test_struct_members_are_avps(self):
        self.assertEqual(binrpc.encode_value({"intval": 3, "s": "abc"}),
                         b"\x03" + b"\x75intval\x00\x10\x03" + b"\x25s\x00\x41abc\x00" + b"\x83")

    def test_list_is_a_struct_of_plain_values_and_none_the_null_string(self):
        self.assertEqual(binrpc.encode_value([1, None]), b"\x03\x10\x01\x91\x0e<null string>\x00\x83")

    def test_round_trip(self):
        values = [1, -5, 2 ** 31 - 1, "ü text", {"a": 1, "b": {"c": "d"}, "e": [1, 2]}, 1.5, b"raw"]
        body = b"".join(binrpc.encode_value(value) for value in values)
        self.assertEqual(binrpc.decode_values(body), values)

    def test_large_integers_become_doubles(self):
        self.assertEqual(binrpc.decode_values(binrpc.encode_value(2 ** 40)), [float(2 ** 40)])


class PacketTests(SynchronousTestCase):

    def test_header(self):
        packet = binrpc.build_request(0x1234, "core.uptime", [])
        self.assertEqual(packet[:2], bytes((0xA1, 0x00 << 4 | 0 << 2 | 1)))
        header = binrpc.parse_header(packet)
        self.assertEqual((header.kind, header.cookie, header.size, header.body_length),
                         (binrpc.REQUEST, 0x1234, 5, len(packet) - 5))

    def test_request_parsed(self):
        packet = binrpc.build_request(7, "uac.reg_info", ["l_uuid", "acc1"])
        [(header, body)] = binrpc.FrameReader(1000).feed(packet)
        self.assertEqual(binrpc.parse_request(header, body), binrpc.Request(7, "uac.reg_info", ["l_uuid", "acc1"]))

    def test_reply_values_and_fault(self):
        reply = binrpc.build_reply(9, [{"a": 1}, "x"])
        header = binrpc.parse_header(reply)
        self.assertEqual((header.kind, header.cookie), (binrpc.REPLY, 9))
        self.assertEqual(binrpc.decode_values(reply[header.size:]), [{"a": 1}, "x"])
        fault = binrpc.build_fault(9, 404, "Record not found")
        header = binrpc.parse_header(fault)
        self.assertEqual(header.kind, binrpc.FAULT)
        self.assertEqual(binrpc.decode_values(fault[header.size:]), [404, "Record not found"])
        self.assertEqual(binrpc.decode_values(binrpc.build_reply(1, None)[4:]), [])

    def test_frames_cut_anywhere(self):
        packets = binrpc.build_request(1, "a", [1]) + binrpc.build_request(2, "b", ["x" * 300])
        reader = binrpc.FrameReader(1000)
        got = []
        for position in range(len(packets)):
            got += reader.feed(packets[position:position + 1])
        self.assertEqual([binrpc.parse_request(*packet).method for packet in got], ["a", "b"])
        self.assertEqual(reader.pending, 0)

    def test_wrong_magic_or_version(self):
        for first in (b"\xb1", b"\xa2", b"GET / HTTP/1.1\r\n"):
            with self.assertRaises(binrpc.BinRPCError):
                binrpc.FrameReader(1000).feed(first + b"\x00\x00\x00")

    def test_body_longer_than_allowed(self):
        with self.assertRaises(binrpc.BinRPCError) as raised:
            binrpc.FrameReader(1000).feed(binrpc.build_header(binrpc.REQUEST, 1001, 1))
        self.assertIn("1001 octets", str(raised.exception))

    def test_record_length_beyond_the_body(self):
        header = binrpc.Header(binrpc.REQUEST, 4, 1, 4)
        for body in (b"\x91\x7fabc", b"\x71ab", b"\x9fab"):  # string of 127, of 7, length of 7 octets
            with self.assertRaises(binrpc.BinRPCError):
                binrpc.parse_request(header, body)

    def test_method_must_be_a_string_and_structs_closed(self):
        with self.assertRaises(binrpc.BinRPCError):
            binrpc.parse_request(binrpc.Header(binrpc.REQUEST, 2, 1, 4), b"\x10\x01")
        with self.assertRaises(binrpc.BinRPCError):
            binrpc.parse_request(binrpc.Header(binrpc.REQUEST, 3, 1, 4), b"\x21a\x00\x03")
        with self.assertRaises(binrpc.BinRPCError):
            binrpc.parse_request(binrpc.Header(binrpc.REQUEST, 3, 1, 4), b"\x21a\x00" + b"\x03" * 40)


class FaultTests(SynchronousTestCase):

    def test_ctl_faults(self):
        self.assertEqual(fault_of({"code": -32601, "message": "Method Not Found"}, "uac.x"),
                         (500, "command uac.x not found"))
        self.assertEqual(fault_of({"code": -32603, "message": "Internal Error"}, "m"), (500, "internal server error"))
        self.assertEqual(fault_of({"code": -32602, "message": "Invalid Parameters", "data": "why"}, "m"),
                         (400, "Invalid Parameters: why"))
        self.assertEqual(fault_of({"code": 404, "message": "Record not found"}, "m"), (404, "Record not found"))


class ProtocolTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()
        dispatcher = Dispatcher(self.clock)
        self.later = defer.Deferred()
        dispatcher.register("echo", lambda text: text, (Param("text"),))
        dispatcher.register("missing", self.missing)
        dispatcher.register("slow", lambda: self.later)
        dispatcher.register("nothing", lambda: None)
        self.server = BinRPCServer(dispatcher, RPCSettings(max_request_size=1000), "unix:/run/test_ctl", self.clock)
        self.lines = []

        def observe(event):
            if event.get("log_level") == LogLevel.warn and "binrpc" in formatEvent(event):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.addCleanup(self.server.warnings.flush)

    def missing(self):
        raise RPCError(404, "Record not found")

    def connect(self):
        protocol = BinRPCProtocol(self.server)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def replies(self, transport) -> list:
        data = transport.value()
        transport.clear()
        out = []
        for header, body in binrpc.FrameReader(10 ** 6).feed(data):
            out.append((header.kind, header.cookie, binrpc.decode_values(body)))
        return out

    def test_requests_answered_in_order(self):
        protocol, transport = self.connect()
        protocol.dataReceived(binrpc.build_request(1, "echo", ["a"]) + binrpc.build_request(2, "missing", [])
                              + binrpc.build_request(3, "nosuch", []))
        self.assertEqual(self.replies(transport), [(binrpc.REPLY, 1, ["a"]), (binrpc.FAULT, 2, [404, "Record not found"]),
                                                   (binrpc.FAULT, 3, [500, "command nosuch not found"])])
        self.assertFalse(transport.disconnecting)

    def test_nothing_is_an_empty_reply(self):
        """A method that adds nothing: an empty reply (kamcmd prints nothing), not {}."""
        protocol, transport = self.connect()
        protocol.dataReceived(binrpc.build_request(4, "nothing", []))
        self.assertEqual(self.replies(transport), [(binrpc.REPLY, 4, [])])

    def test_bad_packets_closed_with_a_fault_logged_once(self):
        for garbage in (b"\xb1\x00\x01\x01x", b"\xa2\x00\x01\x01x", binrpc.build_header(binrpc.REQUEST, 5000, 1),
                        binrpc.build_header(binrpc.REQUEST, 3, 1) + b"\x91\x7fab"):
            protocol, transport = self.connect()
            protocol.dataReceived(garbage)
            [(kind, cookie, values)] = self.replies(transport)
            self.assertEqual((kind, values[0]), (binrpc.FAULT, 400))
            self.assertTrue(values[1].startswith("bad request: "), values)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.lines), 1, self.lines)
        self.assertIn("binrpc: closed a connection from 192.168.1.1:54321: not a binrpc version 1 packet", self.lines[0])

    def test_unfinished_packet_closed_after_the_timeout(self):
        protocol, transport = self.connect()
        packet = binrpc.build_request(1, "echo", ["a"])
        protocol.dataReceived(packet[:-2])
        self.clock.advance(CLIENT_TIMEOUT - 1)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertIn("left a packet unfinished", self.lines[0])

    def test_finished_packet_cancels_the_timeout(self):
        protocol, transport = self.connect()
        packet = binrpc.build_request(1, "echo", ["a"])
        protocol.dataReceived(packet[:-2])
        protocol.dataReceived(packet[-2:])
        self.clock.advance(CLIENT_TIMEOUT * 3)
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.replies(transport), [(binrpc.REPLY, 1, ["a"])])

    def test_client_not_reading_is_not_read_and_is_dropped(self):
        protocol, transport = self.connect()
        protocol.pauseProducing()  # the transport's buffer is full
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(binrpc.build_request(1, "echo", ["a"]))
        self.assertEqual(transport.value(), b"")  # no answer while paused: nothing grows
        self.clock.advance(CLIENT_TIMEOUT)
        self.assertTrue(transport.disconnected)
        self.assertIn("did not read its reply", self.lines[0])

    def test_resumed_client_gets_its_answers(self):
        protocol, transport = self.connect()
        protocol.pauseProducing()
        protocol.dataReceived(binrpc.build_request(1, "echo", ["a"]))
        protocol.resumeProducing()
        self.assertEqual(self.replies(transport), [(binrpc.REPLY, 1, ["a"])])
        self.clock.advance(CLIENT_TIMEOUT * 2)
        self.assertFalse(transport.disconnected)

    def test_one_request_at_a_time(self):
        protocol, transport = self.connect()
        protocol.dataReceived(binrpc.build_request(1, "slow", []) + binrpc.build_request(2, "echo", ["b"]))
        self.assertEqual(transport.value(), b"")
        self.later.callback({"done": 1})
        self.assertEqual(self.replies(transport), [(binrpc.REPLY, 1, [{"done": 1}]), (binrpc.REPLY, 2, ["b"])])

    def test_connections_limited(self):
        protocols = [self.server.buildProtocol(None) for _ in range(MAX_CONNECTIONS)]
        for protocol in protocols:
            protocol.makeConnection(StringTransport())
        self.assertIsNone(self.server.buildProtocol(None))
        self.assertIsNone(self.server.buildProtocol(None))
        self.assertEqual(len(self.lines), 1, self.lines)
        protocols[0].connectionLost(None)
        self.assertIsNotNone(self.server.buildProtocol(None))
