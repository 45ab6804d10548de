"""The JSON-RPC dispatcher on its own: request and response shapes, errors, batches; and
uac.reg_add's checks over real HTTP."""

from __future__ import annotations

import io
import json

from twisted.internet import defer, reactor, task
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import client
from twisted.web.http_headers import Headers

from tests.support.bad_rows import BAD_VALUES
from tests.support.peers import free_port
from tests.support.services import start_uac, wait_for_store
from tests.support.stores import sqlite_uacreg
from txuac.admin import rpc
from txuac.admin.rpc import Dispatcher, Param, RPCError


class DispatcherTests(SynchronousTestCase):

    def setUp(self):
        self.dispatcher = Dispatcher()
        self.calls = []
        add = self.dispatcher.register
        add("echo.text", lambda text: text, (Param("text"),))
        add("echo.number", lambda number: number, (Param("number", int),))
        add("pair", lambda attr, val: [attr, val], (Param("attr"), Param("val")),
            missing=RPCError(400, "Invalid Parameters"))
        add("optional", lambda *values: list(values), (Param("a"), Param("b", int)), required=1)
        add("nothing", lambda: None)
        add("later", lambda: defer.succeed({"done": True}))
        add("missing", self.raise_404)
        add("broken", lambda: 1 / 0)
        add("anything", lambda *values: list(values), params=None)

    def raise_404(self):
        raise RPCError(404, "Record not found")

    def answer(self, body) -> tuple[int, object]:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        answer = self.successResultOf(self.dispatcher.handle(body))
        return answer.status, None if answer.body is None else json.loads(answer.body)

    def request(self, method, params=None, request_id=1) -> tuple[int, object]:
        request = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            request["params"] = params
        return self.answer(request)

    def assertError(self, answered, status: int, code: int, message: str, request_id=1):
        got_status, response = answered
        self.assertEqual(got_status, status, response)
        self.assertEqual(response["error"]["code"], code, response)
        self.assertEqual(response["error"]["message"], message, response)
        self.assertEqual(response.get("id", "absent"), request_id)
        self.assertEqual(response["jsonrpc"], "2.0")
        return response["error"]

    def test_result_shape(self):
        self.assertEqual(self.request("echo.text", ["hello"], "abc"),
                         (200, {"jsonrpc": "2.0", "result": "hello", "id": "abc"}))

    def test_nothing_is_an_empty_object(self):
        """jsonrpcs answers an RPC that adds nothing with an empty result object."""
        self.assertEqual(self.request("nothing"), (200, {"jsonrpc": "2.0", "result": {}, "id": 1}))

    def test_deferred_result(self):
        self.assertEqual(self.request("later")[1]["result"], {"done": True})

    def test_without_id_answered_without_id(self):
        self.assertEqual(self.answer({"jsonrpc": "2.0", "method": "echo.text", "params": ["x"]}),
                         (200, {"jsonrpc": "2.0", "result": "x"}))

    def test_application_error_keeps_code_and_message(self):
        self.assertError(self.request("missing"), 404, 404, "Record not found")

    def test_parse_error(self):
        error = self.assertError(self.answer(b'{"jsonrpc": "2.0", "method"'), 400, -32700, "Parse Error", None)
        self.assertIn("data", error)
        self.assertError(self.answer(b"\xff\xfe{}"), 400, -32700, "Parse Error", None)

    def test_invalid_requests(self):
        self.assertError(self.answer(5), 400, -32600, "Invalid Request", None)
        self.assertError(self.answer({"method": "nothing", "id": 1}), 400, -32600, "Invalid Request")
        self.assertError(self.answer({"jsonrpc": "1.0", "method": "nothing", "id": 1}), 400, -32600,
                         "Invalid Request")
        self.assertError(self.answer({"jsonrpc": "2.0", "method": 7, "id": 1}), 400, -32600, "Invalid Request")
        self.assertError(self.answer({"jsonrpc": "2.0", "method": "echo.text", "params": "x", "id": 1}),
                         400, -32600, "Invalid Request")
        self.assertError(self.answer({"jsonrpc": "2.0", "method": "nothing", "id": True}), 400, -32600,
                         "Invalid Request", None)
        self.assertError(self.answer([]), 400, -32600, "Invalid Request", None)

    def test_unknown_method(self):
        error = self.assertError(self.request("no.such"), 404, -32601, "Method Not Found")
        self.assertIn("no.such", error["data"])

    def test_too_many_params(self):
        self.assertError(self.request("echo.text", ["a", "b"]), 400, -32602, "Invalid Parameters")

    def test_wrong_types(self):
        for value in ({"a": 1}, [1], None, True, 1.5):
            error = self.assertError(self.request("echo.text", [value]), 400, -32602, "Invalid Parameters")
            self.assertIn("parameter 1 (text) must be a string", error["data"])
        for value in ("abc", "1.5", True, None):
            error = self.assertError(self.request("echo.number", [value]), 400, -32602, "Invalid Parameters")
            self.assertIn("parameter 1 (number) must be an integer", error["data"])

    def test_numbers_and_numeric_strings_are_converted(self):
        self.assertEqual(self.request("echo.text", [1000])[1]["result"], "1000")
        self.assertEqual(self.request("echo.number", ["-12"])[1]["result"], -12)
        self.assertEqual(self.request("echo.number", [0])[1]["result"], 0)

    def test_missing_params(self):
        self.assertError(self.request("pair", ["l_uuid"]), 400, 400, "Invalid Parameters")
        self.assertError(self.request("echo.text"), 400, -32602, "Invalid Parameters")
        self.assertEqual(self.request("optional", ["x"])[1]["result"], ["x"])
        self.assertEqual(self.request("optional", ["x", "2"])[1]["result"], ["x", 2])

    def test_params_by_name(self):
        self.assertEqual(self.request("pair", {"val": "1000", "attr": "l_uuid"})[1]["result"], ["l_uuid", "1000"])
        error = self.assertError(self.request("pair", {"attr": "l_uuid", "value": "1"}), 400, -32602,
                                 "Invalid Parameters")
        self.assertIn("value", error["data"])
        self.assertError(self.request("pair", {"val": "1000"}), 400, 400, "Invalid Parameters")
        self.assertEqual(self.request("optional", {"a": "x"})[1]["result"], ["x"])

    def test_unchecked_params(self):
        self.assertEqual(self.request("anything", ["a", 1, None])[1]["result"], ["a", 1, None])
        self.assertEqual(self.request("anything")[1]["result"], [])

    def test_unexpected_exception_is_an_internal_error(self):
        self.assertError(self.request("broken"), 500, -32603, "Internal Error")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.request("echo.text", ["still here"])[1]["result"], "still here")

    def test_batch(self):
        status, responses = self.answer([
            {"jsonrpc": "2.0", "method": "echo.text", "params": ["a"], "id": 1},
            {"jsonrpc": "2.0", "method": "echo.text", "params": ["notified"]},
            {"jsonrpc": "2.0", "method": "missing", "id": 2},
            {"jsonrpc": "2.0", "method": "no.such", "id": 3},
            "junk",
        ])
        self.assertEqual(status, 200)
        self.assertEqual(responses, [
            {"jsonrpc": "2.0", "result": "a", "id": 1},
            {"jsonrpc": "2.0", "error": {"code": 404, "message": "Record not found"}, "id": 2},
            {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method Not Found", "data": "no method 'no.such'"},
             "id": 3},
            {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request",
                                         "data": "a request is an object"}, "id": None},
        ])

    def test_batch_of_notifications_has_no_answer(self):
        self.assertEqual(self.answer([{"jsonrpc": "2.0", "method": "nothing"}]), (204, None))

    def test_names(self):
        self.assertEqual(self.dispatcher.names()[:3], ["anything", "broken", "echo.number"])

    def test_error_http_status(self):
        self.assertEqual(RPCError(409, "uuid already exists").http_status, 409)
        self.assertEqual(RPCError(-32000, "Execution Error").http_status, 500)
        self.assertEqual(RPCError(-32601).message, "Method Not Found")


class RegAddOverHTTPTests(TestCase):
    """uac.reg_add through the JSON-RPC web resource on a loopback port: every value that
    would make bad SIP is refused with 400 naming the field, and nothing is added."""

    @defer.inlineCallbacks
    def setUp(self):
        path = yield sqlite_uacreg(self, [])
        sip_port = free_port()
        self.service = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{sip_port}"]},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}"},
            "rpc": {"listen": "tcp:0:interface=127.0.0.1"},
        })
        yield wait_for_store(self.service)

    @defer.inlineCallbacks
    def reg_add(self, changes: dict):
        """(HTTP status, response object) of uac.reg_add with a good row changed by ``changes``."""
        values = {"l_uuid": "added", "l_username": "local", "l_domain": "pbx.example.com", "r_username": "remote",
                  "r_domain": "sip.provider.example", "realm": ".", "auth_username": "auth", "auth_password": "pw",
                  "auth_ha1": ".", "auth_proxy": "sip:127.0.0.1:9", "expires": 600, "flags": 1, "reg_delay": 0,
                  "socket": ".", "contact_addr": ".", "contact_user": "."}
        values.update(changes)
        body = json.dumps({"jsonrpc": "2.0", "method": "uac.reg_add", "params": list(values.values()), "id": 7})
        url = f"http://127.0.0.1:{self.service.rpc.port}/RPC".encode()
        response = yield client.Agent(reactor).request(
            b"POST", url, Headers({b"Content-Type": [b"application/json"]}),
            client.FileBodyProducer(io.BytesIO(body.encode())))
        data = yield client.readBody(response)
        return response.code, json.loads(data)

    @defer.inlineCallbacks
    def test_bad_values_refused_with_400_naming_the_field(self):
        for column, value, reason in BAD_VALUES:
            status, response = yield self.reg_add({column: value})
            error = response.get("error")
            self.assertIsNotNone(error, f"{column}={value!r:.60} was added")
            expected = 500 if column == "auth_password" else 400  # Kamailio's code for a bad password
            self.assertEqual((status, error["code"]), (expected, expected), error)
            self.assertTrue(error["data"].startswith(f"invalid {column}: "), error)
            self.assertIn(reason, error["data"])
            self.assertEqual(self.service.registrant.records, {})

    @defer.inlineCallbacks
    def test_good_row_is_added(self):
        status, response = yield self.reg_add({"contact_user": "line1", "contact_addr": "192.0.2.1:5080",
                                                "expires": 2**31 - 1})
        self.assertEqual((status, response["result"]), (200, {}))
        record = self.service.registrant.records["added"]
        self.assertEqual((record.contact_user, record.contact_addr, record.expires),
                         ("line1", "192.0.2.1:5080", 2**31 - 1))


class RefusedBodiesAndAuditTests(SynchronousTestCase):
    """Deep nesting refused with one rate-limited warning; state changes audited with
    secrets masked."""

    def setUp(self):
        self.events: list[dict] = []
        self.patch(rpc, "log", Logger(namespace="txuac.admin.rpc", observer=self.events.append))
        self.patch(rpc, "audit_log", Logger(namespace="txuac.admin.audit", observer=self.events.append))
        self.clock = task.Clock()
        self.dispatcher = Dispatcher(self.clock)
        self.dispatcher.register("x.read", lambda *values: "read", params=None)
        self.dispatcher.register("x.add", lambda *values: None, (Param("l_uuid"), Param("auth_password"),
                                                               Param("auth_ha1")), required=1, audit=True)

    def answer(self, body: bytes, peer: str = "127.0.0.1:4000"):
        answer = self.successResultOf(self.dispatcher.handle(body, peer))
        return answer.status, json.loads(answer.body)

    def test_deep_nesting(self):
        for depth in (33, 1000, 200_000):
            status, response = self.answer(b"[" * depth + b"]" * depth)
            self.assertEqual((status, response["error"]["code"]), (400, -32600), depth)
            self.assertIn("nested deeper than 32 levels", response["error"]["data"])
        status, response = self.answer(b'{"jsonrpc": "2.0", "method": "x.read", "params": ' + b"[" * 31 + b"]" * 31
                                       + b', "id": 1}')
        self.assertEqual((status, response["result"]), (200, "read"))
        self.assertEqual([formatEvent(e) for e in self.events],
                         ["refused a JSON-RPC body from 127.0.0.1:4000: nested deeper than 32 levels"])
        self.clock.advance(10)
        self.assertEqual(formatEvent(self.events[-1]),
                         "2 more too deeply nested bodies from 127.0.0.1 suppressed in the last 10 s")

    def test_audit(self):
        self.answer(b'{"jsonrpc": "2.0", "method": "x.read", "params": ["pw"], "id": 1}')
        self.assertEqual(self.events, [])
        self.answer(b'{"jsonrpc": "2.0", "method": "x.add", "params": ["1", "secret", "."], "id": 1}', "[::1]:5")
        self.answer(b'{"jsonrpc": "2.0", "method": "x.add", "params": {"l_uuid": "2", "auth_password": "s3"}, "id": 2}')
        self.answer(b'{"jsonrpc": "2.0", "method": "x.add", "params": [], "id": 3}')
        self.assertEqual([(e["log_level"], e["peer"], e["method"], e["params"], e["outcome"]) for e in self.events], [
            (LogLevel.info, "[::1]:5", "x.add", ["1", "********", "."], "ok"),
            (LogLevel.info, "127.0.0.1:4000", "x.add", {"l_uuid": "2", "auth_password": "********"}, "ok"),
            (LogLevel.info, "127.0.0.1:4000", "x.add", [], "error -32602: Invalid Parameters"),
        ])
        self.assertEqual(formatEvent(self.events[0]), "[::1]:5 called x.add ['1', '********', '.']: ok")
        self.assertNotIn("secret", repr(self.events))
