"""Every RPC method over real HTTP on loopback, against a started UACService whose
accounts come from a SQLite uacreg file; a real Kamailio registrar where an account
must really register and unregister."""

from __future__ import annotations

import io
import json
import socket
import sqlite3

from twisted.internet import defer, reactor, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web import client
from twisted.web.http_headers import Headers

from tests.support.accounts import HA1, make_row
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.services import TOKEN, dead_rows, start_service, wait_until
from tests.support.stores import sqlite_uacreg
from txuac.admin.uac_rpc import MASK
from txuac.config import settings_from_dict
from txuac.errors import ConfigError
from txuac.service import UACService

RECORD_FIELDS = ["l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm", "auth_username",
                 "auth_password", "auth_ha1", "auth_proxy", "expires", "flags", "diff_expires", "timer_expires",
                 "reg_init", "reg_delay", "contact_addr", "socket", "contact_user", "state", "last_error",
                 "path", "service_route", "pub_gruu", "temp_gruu", "flow_timer"]


def make_store(testcase, rows: list[dict]):
    """Deferred[str]: a SQLite uacreg file holding ``rows``."""
    return sqlite_uacreg(testcase, rows)


def log_events(testcase) -> list[dict]:
    """The log events emitted from now until the test ends."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def raw_http(port: int, head: bytes, body_chunks=(), host: str = "127.0.0.1") -> bytes:
    """Everything the server sends back to ``head`` then ``body_chunks`` sent on one
    connection (blocking: run it in a thread); sending stops at the first error."""
    with socket.create_connection((host, port), timeout=10) as connection:
        try:
            connection.sendall(head)
            for chunk in body_chunks:
                connection.sendall(chunk)
        except OSError:
            pass  # the server stopped reading: what it answered is still there to read
        answer = b""
        while True:
            try:
                data = connection.recv(65536)
            except ConnectionResetError:
                return answer + b"<reset>"
            if not data:
                return answer
            answer += data


class HTTPClientMixin:
    token: str | None = None

    @defer.inlineCallbacks
    def http(self, method: bytes = b"POST", path: bytes = b"/RPC", body: bytes | None = None,
             token: str | None = None, port: int | None = None, headers: dict[bytes, bytes] | None = None):
        """(status, headers, body) of one request to the RPC server; ``headers`` replace the
        defaults (Content-Type: application/json, Host: 127.0.0.1:port)."""
        headers = Headers({name: [value] for name, value in
                           {b"Content-Type": b"application/json", **(headers or {})}.items()})
        token = token if token is not None else self.token
        if token:
            headers.addRawHeader(b"Authorization", b"Bearer " + token.encode())
        producer = client.FileBodyProducer(io.BytesIO(body)) if body is not None else None
        url = f"http://127.0.0.1:{port or self.service.rpc.port}".encode() + path
        response = yield client.Agent(reactor).request(method, url, headers, producer)
        data = yield client.readBody(response)
        return response.code, response.headers, data

    @defer.inlineCallbacks
    def rpc(self, method: str, *params, request_id=1):
        """The response object to ``method(*params)`` (params by name when one dict is given)."""
        request = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if len(params) == 1 and isinstance(params[0], dict):
            request["params"] = params[0]
        elif params:
            request["params"] = list(params)
        status, headers, data = yield self.http(body=json.dumps(request).encode())
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        response = json.loads(data)
        self.assertEqual(response["jsonrpc"], "2.0")
        self.assertEqual(response["id"], request_id)
        self.last_status = status
        return response

    @defer.inlineCallbacks
    def result(self, method: str, *params):
        response = yield self.rpc(method, *params)
        self.assertNotIn("error", response)
        self.assertEqual(self.last_status, 200)
        return response["result"]

    @defer.inlineCallbacks
    def error(self, method: str, *params) -> tuple[int, str]:
        response = yield self.rpc(method, *params)
        self.assertNotIn("result", response)
        error = response["error"]
        return error["code"], error["message"]

    @defer.inlineCallbacks
    def assertStillAnswering(self):
        version = yield self.result("core.version")
        self.assertTrue(version.startswith("txuac "), version)


class UACMethodsTests(HTTPClientMixin, TestCase):
    """uac.* against accounts that never get an answer."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, dead_rows())
        self.registrant = self.service.registrant

    @defer.inlineCallbacks
    def test_reg_dump(self):
        yield wait_until(lambda: self.registrant.records["failing"].last_failure is not None)
        records = yield self.result("uac.reg_dump")
        self.assertEqual(sorted(r["l_uuid"] for r in records), ["1000", "failing", "with-ha1"])
        for record in records:
            self.assertEqual(list(record), RECORD_FIELDS)
        by_uuid = {r["l_uuid"]: r for r in records}
        plain = by_uuid["1000"]
        self.assertEqual((plain["l_username"], plain["l_domain"], plain["r_username"], plain["r_domain"]),
                         ("local-1000", "pbx.example.com", "remote-1000", "sip.provider.example"))
        self.assertEqual((plain["auth_password"], plain["auth_ha1"]), (MASK, "none"))
        # An empty contact_addr shows reg_contact_addr, as Kamailio's reg_dump does.
        self.assertEqual((plain["contact_addr"], plain["socket"], plain["contact_user"]),
                         (self.registrant.settings.reg_contact_addr, "", "none"))
        self.assertTrue(plain["contact_addr"].startswith("127.0.0.1:"))
        self.assertEqual((plain["expires"], plain["flags"], plain["state"], plain["last_error"]),
                         (3600, 1, "disabled", None))
        now = int(reactor.seconds())
        self.assertLessEqual(abs(plain["reg_init"] - now), 5)  # epoch seconds
        self.assertEqual(plain["diff_expires"], plain["timer_expires"] - now)
        ha1 = by_uuid["with-ha1"]
        self.assertEqual((ha1["auth_password"], ha1["auth_ha1"]), ("none", MASK))
        self.assertEqual((ha1["contact_addr"], ha1["contact_user"]), ("192.0.2.1:5080", "line7"))
        failing = by_uuid["failing"]
        self.assertEqual(failing["state"], "failed")
        self.assertEqual(failing["flags"] & 1, 0)
        self.assertEqual(failing["last_error"], self.registrant.records["failing"].last_failure)
        self.assertGreater(failing["diff_expires"], 30)  # the retry, reg_retry_interval (60 s) away
        self.assertNotIn("secret-pw", json.dumps(records))
        self.assertNotIn(HA1.lower(), json.dumps(records))

    @defer.inlineCallbacks
    def test_reg_info(self):
        record = yield self.result("uac.reg_info", "l_uuid", "1000")
        self.assertEqual((list(record), record["l_uuid"]), (RECORD_FIELDS, "1000"))
        by_number = yield self.result("uac.reg_info", "l_uuid", 1000)  # a JSON number is its text
        self.assertEqual(by_number["l_uuid"], "1000")
        by_name = yield self.result("uac.reg_info", {"attr": "r_username", "val": "remote-with-ha1"})
        self.assertEqual(by_name["l_uuid"], "with-ha1")
        by_auth = yield self.result("uac.reg_info", "auth_username", "auth-failing")
        self.assertEqual(by_auth["l_uuid"], "failing")
        by_user = yield self.result("uac.reg_info", "l_username", "local-1000")
        self.assertEqual(by_user["l_uuid"], "1000")

    @defer.inlineCallbacks
    def test_filter_errors(self):
        for method in ("uac.reg_info", "uac.reg_enable", "uac.reg_disable", "uac.reg_register",
                       "uac.reg_unregister"):
            self.assertEqual((yield self.error(method, "l_uuid", "nobody")), (404, "Record not found"))
            self.assertEqual(self.last_status, 404)
            self.assertEqual((yield self.error(method, "r_domain", "x")), (400, "Unsupported filter attribute"))
            self.assertEqual((yield self.error(method, "l_uuid", "")), (400, "Invalid Parameter Values"))
            self.assertEqual((yield self.error(method, "l_uuid")), (400, "Invalid Parameters"))
            self.assertEqual(self.last_status, 400)
            self.assertEqual((yield self.error(method, "l_uuid", ["1000"])), (-32602, "Invalid Parameters"))
            yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_enable_and_disable(self):
        self.assertEqual((yield self.result("uac.reg_enable", "l_uuid", "1000")), {})
        self.assertFalse(self.registrant.records["1000"].has(1))
        # Enabled, it registers at once (and gets no answer from the dead proxy).
        yield wait_until(lambda: self.registrant.records["1000"].sent_at is not None)
        self.assertEqual((yield self.result("uac.reg_disable", "l_username", "local-1000")), {})
        record = yield self.result("uac.reg_info", "l_uuid", "1000")
        self.assertEqual((record["flags"] & 1, record["state"]), (1, "disabled"))

    @defer.inlineCallbacks
    def test_reg_register_sends_even_when_disabled(self):
        self.assertIsNone(self.registrant.records["1000"].sent_at)
        self.assertEqual((yield self.result("uac.reg_register", "l_uuid", "1000")), {})
        record = yield self.result("uac.reg_info", "l_uuid", "1000")
        self.assertEqual(record["flags"] & 3, 3)  # still DISABLED, and ONGOING
        self.assertIsNotNone(self.registrant.records["1000"].sent_at)

    @defer.inlineCallbacks
    def test_reg_unregister_makes_the_account_dormant(self):
        self.assertEqual((yield self.result("uac.reg_unregister", "l_uuid", "with-ha1")), {})
        record = yield self.result("uac.reg_info", "l_uuid", "with-ha1")
        self.assertEqual(record["expires"], 0)
        self.assertEqual(record["flags"] & 2, 2)  # the un-REGISTER is in flight

    @defer.inlineCallbacks
    def test_reg_active(self):
        self.assertEqual((yield self.result("uac.reg_active", 0)), {"omode": 1, "nmode": 0})
        self.assertFalse(self.registrant.active)
        self.assertEqual((yield self.result("uac.reg_active", "7")), {"omode": 0, "nmode": 7})
        self.assertTrue(self.registrant.active)
        self.assertEqual((yield self.error("uac.reg_active")), (500, "Missing parameter"))
        self.assertEqual((yield self.error("uac.reg_active", "on")), (-32602, "Invalid Parameters"))
        self.assertEqual(self.last_status, 400)
        self.assertTrue(self.registrant.active)

    def add_params(self, l_uuid: str, **changes) -> list:
        values = {"l_uuid": l_uuid, "l_username": "added", "l_domain": "pbx.example.com", "r_username": "added",
                  "r_domain": "sip.provider.example", "realm": ".", "auth_username": "added",
                  "auth_password": "pw", "auth_ha1": ".", "auth_proxy": "sip:127.0.0.1:9", "expires": 600,
                  "flags": 1, "reg_delay": 0, "socket": ".", "contact_addr": "."}
        values.update(changes)
        return list(values.values())

    @defer.inlineCallbacks
    def test_reg_add(self):
        self.assertEqual((yield self.result("uac.reg_add", *self.add_params("added-1"))), {})
        record = yield self.result("uac.reg_info", "l_uuid", "added-1")
        self.assertEqual((record["realm"], record["auth_ha1"], record["socket"], record["contact_addr"]),
                         ("", "none", "", self.registrant.settings.reg_contact_addr))
        self.assertEqual((record["expires"], record["flags"], record["auth_password"]), (600, 1, MASK))
        # The 16th parameter, contact_user; integers may come as strings.
        yield self.result("uac.reg_add", *self.add_params("added-2", expires="300", contact_user="line9"))
        record = yield self.result("uac.reg_info", "l_uuid", "added-2")
        self.assertEqual((record["expires"], record["contact_user"]), (300, "line9"))

    @defer.inlineCallbacks
    def test_reg_add_errors(self):
        self.assertEqual((yield self.error("uac.reg_add", *self.add_params("1000"))), (409, "uuid already exists"))
        self.assertEqual(self.last_status, 409)
        bad = "Failed to add record - invalid password or ha1"
        self.assertEqual((yield self.error("uac.reg_add", *self.add_params("x", auth_ha1="not-an-ha1"))), (500, bad))
        self.assertEqual((yield self.error("uac.reg_add", *self.add_params("x", auth_password="."))), (500, bad))
        self.assertEqual((yield self.error("uac.reg_add", *self.add_params("x", l_domain=""))),
                         (400, "Invalid Parameter Values"))
        self.assertEqual((yield self.error("uac.reg_add", *self.add_params("x")[:14])), (400, "Invalid Parameters"))
        self.assertEqual((yield self.error("uac.reg_add", *self.add_params("x", expires="soon"))),
                         (-32602, "Invalid Parameters"))
        self.assertNotIn("x", self.registrant.records)
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_reg_remove(self):
        self.assertEqual((yield self.result("uac.reg_remove", "1000")), {})
        self.assertEqual((yield self.error("uac.reg_info", "l_uuid", "1000")), (404, "Record not found"))
        self.assertEqual((yield self.error("uac.reg_remove", "1000")), (404, "Record not found"))
        self.assertEqual((yield self.error("uac.reg_remove")), (400, "Invalid Parameters"))

    @defer.inlineCallbacks
    def test_reg_reload(self):
        yield self.result("uac.reg_add", *self.add_params("memory-only"))
        connection = sqlite3.connect(self.store_path)
        connection.execute("INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, auth_username,"
                           " auth_password, auth_proxy, expires, flags) VALUES ('new', 'n', 'd', 'n', 'r.example',"
                           " 'n', 'pw', 'sip:127.0.0.1:9', 60, 1)")
        connection.commit()
        connection.close()
        self.assertEqual((yield self.result("uac.reg_reload")), {})
        self.assertEqual(sorted(self.registrant.records), ["1000", "failing", "new", "with-ha1"])
        # reload_delta (30 s) has not passed: refused, as Kamailio does.
        self.assertEqual((yield self.error("uac.reg_reload")), (500, "Failed to shift records - check log messages"))
        self.assertEqual(sorted(self.registrant.records), ["1000", "failing", "new", "with-ha1"])

    @defer.inlineCallbacks
    def test_reg_refresh(self):
        connection = sqlite3.connect(self.store_path)
        connection.execute("UPDATE uacreg SET expires = 1234 WHERE l_uuid = '1000'")
        connection.commit()
        connection.close()
        self.assertEqual((yield self.result("uac.reg_refresh", "1000")), {})
        self.assertEqual((yield self.result("uac.reg_info", "l_uuid", "1000"))["expires"], 1234)
        self.assertEqual((yield self.error("uac.reg_refresh", "nobody")), (404, "Record not found"))
        yield self.result("uac.reg_add", *self.add_params("memory-only"))
        self.assertEqual((yield self.error("uac.reg_refresh", "memory-only")), (404, "Record not found"))
        self.assertIn("memory-only", self.registrant.records)  # refresh never deletes
        self.assertEqual((yield self.error("uac.reg_refresh")), (400, "Invalid Parameters"))

    @defer.inlineCallbacks
    def test_statistics(self):
        yield wait_until(lambda: self.registrant.records["failing"].last_failure is not None)
        lines = yield self.result("stats.get_statistics", "uac:")
        self.assertEqual(lines[:3], ["uac:regtotal = 3", "uac:regactive = 0", "uac:regdisabled = 2"])
        self.assertIn("uac:regfailed = 1", lines)
        self.assertEqual((yield self.result("stats.get_statistics", "uac:regtotal", "regdisabled")),
                         ["uac:regtotal = 3", "uac:regdisabled = 2"])
        everything = yield self.result("stats.get_statistics", "all")
        self.assertIn("sip:parse_errors = 0", everything)
        self.assertTrue(set(lines) <= set(everything))
        self.assertEqual((yield self.result("stats.get_statistics", "nothing:such")), [])
        self.assertEqual((yield self.error("stats.get_statistics")), (400, "Please provide which stats to retrieve"))

    @defer.inlineCallbacks
    def test_system_and_core(self):
        methods = yield self.result("system.listMethods")
        self.assertEqual(methods, sorted(
            ["cluster.status", "core.uptime", "core.version", "stats.get_statistics", "system.listMethods",
             "system.methodHelp", "uac.reg_active",
             "uac.reg_add", "uac.reg_disable", "uac.reg_dump", "uac.reg_enable", "uac.reg_info", "uac.reg_refresh",
             "uac.reg_register", "uac.reg_reload", "uac.reg_remove", "uac.reg_unregister"]))
        self.assertEqual((yield self.result("system.methodHelp", "uac.reg_dump")),
                         "All registration records; 'cluster': every account of the fleet, with its owner")
        self.assertEqual((yield self.error("system.methodHelp", "no.such")), (400, "command not found"))
        uptime = yield self.result("core.uptime")
        self.assertEqual(list(uptime), ["now", "up_since", "uptime"])
        self.assertGreaterEqual(uptime["uptime"], 0)
        self.assertIsInstance(uptime["now"], str)

    @defer.inlineCallbacks
    def test_show_secrets(self):
        service = yield start_service(self, dead_rows(), rpc={"show_secrets": True})
        self.service = service
        record = yield self.result("uac.reg_info", "l_uuid", "1000")
        self.assertEqual((record["auth_password"], record["auth_ha1"]), ("secret-pw", "none"))
        record = yield self.result("uac.reg_info", "l_uuid", "with-ha1")
        self.assertEqual((record["auth_password"], record["auth_ha1"]), ("none", HA1.lower()))


class ProtocolTests(HTTPClientMixin, TestCase):
    """JSON-RPC and HTTP errors: answered, and the service goes on."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, [make_row("1000", flags=1, auth_proxy="sip:127.0.0.1:9")],
                                           rpc={"max_request_size": 4096})

    @defer.inlineCallbacks
    def json_error(self, body: bytes) -> tuple[int, dict]:
        status, headers, data = yield self.http(body=body)
        return status, json.loads(data)

    @defer.inlineCallbacks
    def test_malformed_json(self):
        status, response = yield self.json_error(b'{"jsonrpc": "2.0", "method": ')
        self.assertEqual((status, response["error"]["code"], response["id"]), (400, -32700, None))
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_unknown_method(self):
        self.assertEqual((yield self.error("uac.reg_nothing")), (-32601, "Method Not Found"))
        self.assertEqual(self.last_status, 404)
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_wrong_parameters(self):
        self.assertEqual((yield self.error("uac.reg_dump", "extra")), (-32602, "Invalid Parameters"))
        self.assertEqual((yield self.error("uac.reg_info", {"attribute": "l_uuid"})), (-32602, "Invalid Parameters"))
        status, response = yield self.json_error(b'{"jsonrpc": "2.0", "method": "core.version", "params": 3, "id": 1}')
        self.assertEqual((status, response["error"]["code"]), (400, -32600))
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_batch(self):
        body = json.dumps([{"jsonrpc": "2.0", "method": "uac.reg_info", "params": ["l_uuid", "1000"], "id": "a"},
                           {"jsonrpc": "2.0", "method": "uac.reg_remove", "params": ["nobody"], "id": "b"}]).encode()
        status, _, data = yield self.http(body=body)
        first, second = json.loads(data)
        self.assertEqual((status, first["id"], first["result"]["l_uuid"]), (200, "a", "1000"))
        self.assertEqual(second, {"jsonrpc": "2.0", "error": {"code": 404, "message": "Record not found"}, "id": "b"})

    @defer.inlineCallbacks
    def test_other_http_methods_and_paths(self):
        status, headers, _ = yield self.http(method=b"GET")
        self.assertEqual(status, 405)
        self.assertIn(b"POST", headers.getRawHeaders(b"allow")[0])
        status, _, _ = yield self.http(path=b"/other", body=b"{}")
        self.assertEqual(status, 404)
        status, headers, _ = yield self.http(method=b"GET", path=b"/")
        self.assertEqual((status, headers.getRawHeaders(b"location")), (303, [b"/status"]))  # the status page
        status, _, _ = yield self.http(method=b"GET", path=b"/other")
        self.assertEqual(status, 404)
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_body_too_large(self):
        request = {"jsonrpc": "2.0", "method": "uac.reg_info", "params": ["l_uuid", "x" * 5000], "id": 1}
        status, _, data = yield self.http(body=json.dumps(request).encode())
        self.assertEqual((status, data), (413, b"request body too large\n"))
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_chunked_body_too_large_is_not_kept(self):
        """Without Content-Length the body is counted as it comes, and dropped beyond the limit."""
        port = self.service.rpc.port

        def send() -> bytes:
            chunk = b"x" * 1000
            head = (b"POST /RPC HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: close\r\n\r\n")
            body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                connection.sendall(head + body)
                answer = b""
                while True:
                    data = connection.recv(65536)
                    if not data:
                        return answer
                    answer += data

        answer = yield threads.deferToThread(send)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        yield wait_until(lambda: not self.service.rpc.site.lingering)
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_metrics(self):
        status, headers, data = yield self.http(method=b"GET", path=b"/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        self.assertIn(b"# TYPE", data)


class TokenTests(HTTPClientMixin, TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, None, rpc={"token": TOKEN})

    @defer.inlineCallbacks
    def test_token_required(self):
        body = json.dumps({"jsonrpc": "2.0", "method": "core.version", "id": 1}).encode()
        for token in ("", "wrong-" + TOKEN, TOKEN[:-1]):
            for path, method in ((b"/RPC", b"POST"), (b"/metrics", b"GET")):
                status, headers, data = yield self.http(method=method, path=path, body=body, token=token)
                self.assertEqual(status, 401, (token, path))
                self.assertEqual(headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="txuac"'])
                self.assertNotIn(b"txuac ", data)
        self.token = TOKEN
        yield self.assertStillAnswering()
        status, _, _ = yield self.http(method=b"GET", path=b"/metrics")
        self.assertEqual(status, 200)

    @defer.inlineCallbacks
    def test_uac_methods_without_registration(self):
        """Without reg_db_url the uac.* methods exist and say so, as Kamailio's do."""
        self.token = TOKEN
        self.assertEqual((yield self.error("uac.reg_dump")), (500, "Not enabled"))
        self.assertEqual((yield self.error("uac.reg_info", "l_uuid", "1")), (500, "Not enabled"))
        response = yield self.rpc("uac.reg_enable", "l_uuid", "1")
        self.assertIn("set [uac] reg_db_url", response["error"]["data"])
        self.assertEqual((yield self.result("stats.get_statistics", "uac:")), [])
        response = yield self.rpc("cluster.status")  # not a cluster node either
        self.assertEqual((response["error"]["code"], response["error"]["message"]), (500, "Not enabled"))
        self.assertIn("set [cluster]", response["error"]["data"])


class StartupTests(TestCase):

    def test_bind_failure_names_the_key(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            settings = settings_from_dict({"core": {"listen": ["udp:127.0.0.1:0"]},
                                           "rpc": {"listen": f"tcp:{port}:interface=127.0.0.1"}}, "uac.toml")
            uac = UACService(settings, reactor)
            with self.assertRaises(ConfigError) as raised:
                uac.rpc.privilegedStartService()
        self.assertEqual(str(raised.exception),
                         f"uac.toml: [rpc] listen: cannot bind tcp:{port}:interface=127.0.0.1: Address already in use")
        self.assertIsNone(uac.rpc.port)

    def test_non_loopback_without_token_is_refused(self):
        with self.assertRaises(ConfigError) as raised:
            settings_from_dict({"rpc": {"listen": "tcp:5064:interface=0.0.0.0"}}, "uac.toml")
        self.assertIn("[rpc] token", str(raised.exception))


class RestartTests(HTTPClientMixin, TestCase):
    """Stopping and starting the admin server keeps its metrics: one registrant observer,
    and the counts so far."""

    timeout = 30

    @defer.inlineCallbacks
    def timeouts_scraped(self):
        status, _, data = yield self.http(method=b"GET", path=b"/metrics")
        self.assertEqual(status, 200)
        [line] = [line for line in data.decode().splitlines()
                  if line.startswith('txuac_register_outcomes_total{class="timeout"}')]
        return float(line.split()[-1])

    @defer.inlineCallbacks
    def test_stop_and_start(self):
        self.service = yield start_service(self, [make_row("failing", auth_proxy=f"sip:127.0.0.1:{free_port()}")])
        rpc, registrant = self.service.rpc, self.service.registrant
        metrics, observers = rpc.metrics, list(registrant.observers)
        self.assertEqual(observers.count(metrics.registrations.observe), 1)
        yield wait_until(lambda: metrics.registrations.outcomes["timeout"] == 1)
        self.assertEqual((yield self.timeouts_scraped()), 1)
        for _ in range(2):
            yield rpc.stopService()
            self.assertIsNone(rpc.port)
            rpc.startService()
            self.assertIs(rpc.metrics, metrics)
            self.assertEqual(registrant.observers, observers)
            self.assertEqual((yield self.timeouts_scraped()), 1)  # from the same counters, on the new port


class RegistrarTests(HTTPClientMixin, TestCase):
    """An account that really registers at Kamailio: online, unregistered, refreshed."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = KamailioRegistrar(self)
        host, port = self.registrar.address
        row = make_row("1000", r_username="alice", r_domain="test.example", realm="test.example",
                       auth_username="alice", auth_password=self.registrar.password_for("alice"),
                       auth_proxy=f"sip:{host}:{port}", expires=600)
        self.service = yield start_service(self, [row], uac={"reg_retry_interval": 5})
        yield wait_until(lambda: self.service.registrant.status("1000") == 1, 20)

    @defer.inlineCallbacks
    def test_online_unregister_refresh(self):
        record = yield self.result("uac.reg_info", "l_uuid", "1000")
        self.assertEqual((record["state"], record["flags"], record["last_error"]), ("online", 20, None))
        self.assertGreater(record["diff_expires"], 500)
        self.assertLessEqual(record["diff_expires"], 600)
        contacts = yield self.registrar.contacts_async("sip:alice@test.example")
        self.assertEqual(len(contacts), 1, self.registrar.explain())

        yield self.result("uac.reg_unregister", "l_uuid", "1000")
        remaining = yield self.registrar.wait_for_contacts("sip:alice@test.example", 0)
        self.assertEqual(remaining, [])
        yield wait_until(lambda: self.service.registrant.records["1000"].state(reactor.seconds()).value
                         == "disabled")
        record = yield self.result("uac.reg_info", "l_uuid", "1000")
        self.assertEqual((record["state"], record["expires"], record["flags"] & 1), ("disabled", 0, 1))
        self.assertEqual(self.service.registrant.status("1000"), -3)

        yield self.result("uac.reg_refresh", "1000")  # the row's expires again: registers anew
        yield wait_until(lambda: self.service.registrant.status("1000") == 1, 20)
        contacts = yield self.registrar.wait_for_contacts("sip:alice@test.example", 1)
        self.assertEqual(len(contacts), 1)
        dump = yield self.result("uac.reg_dump")
        self.assertEqual([(r["l_uuid"], r["state"], r["expires"]) for r in dump], [("1000", "online", 600)])

    @defer.inlineCallbacks
    def test_reg_register_sends_a_new_register(self):
        before = self.service.registrant.records["1000"].sent_at
        yield self.result("uac.reg_register", "l_uuid", 1000)
        self.assertGreater(self.service.registrant.records["1000"].sent_at, before)
        yield wait_until(lambda: self.service.registrant.status("1000") == 1, 20)
        lines = yield self.result("stats.get_statistics", "uac:regactive")
        self.assertEqual(lines, ["uac:regactive = 1"])


class CrossSiteTests(HTTPClientMixin, TestCase):
    """Without a token (the default), a browser led to the port by another site or by DNS
    rebinding must not run anything: Host and Origin must name an allowed host."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, [make_row("1000", flags=1, auth_proxy="sip:127.0.0.1:9")])
        self.port = self.service.rpc.port
        self.events = log_events(self)

    def refusal_lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if formatEvent(e).startswith("refused ")]

    @defer.inlineCallbacks
    def active_off(self, headers: dict[bytes, bytes]):
        """(status, body) of uac.reg_active 0 sent with ``headers``."""
        body = json.dumps({"jsonrpc": "2.0", "method": "uac.reg_active", "params": [0], "id": 1}).encode()
        status, _, data = yield self.http(body=body, headers=headers)
        return status, data

    @defer.inlineCallbacks
    def test_rebinding_and_cross_site_requests_are_refused(self):
        attack = {b"Content-Type": b"text/plain", b"Origin": b"http://evil.example", b"Host": b"rebind.evil.example"}
        for headers in (attack,
                        {b"Host": f"rebind.evil.example:{self.port}".encode()},  # DNS rebinding, same-origin
                        {b"Content-Type": b"text/plain", b"Origin": b"http://evil.example"},  # cross-site
                        {b"Origin": b"null"},  # sandboxed frame, file: page
                        {b"Origin": f"http://127.0.0.1.evil.example:{self.port}".encode()},
                        {b"Host": b"127.0.0.1:x"}):
            status, data = yield self.active_off(headers)
            self.assertEqual(status, 403, headers)
            self.assertTrue(data.startswith(b"forbidden: "), data)
            self.assertTrue(self.service.registrant.active, headers)
        status, _, _ = yield self.http(method=b"GET", path=b"/metrics", headers={b"Host": b"rebind.evil.example"})
        self.assertEqual(status, 403)
        status, _, _ = yield self.http(method=b"GET", path=b"/", headers={b"Origin": b"http://evil.example"})
        self.assertEqual(status, 403)
        # Logged once for the address, whatever the number of attempts.
        [line] = self.refusal_lines()
        self.assertIn("from 127.0.0.1:", line)
        self.assertIn("rebind.evil.example", line)

    @defer.inlineCallbacks
    def test_no_host_header_is_refused(self):
        answer = yield threads.deferToThread(
            raw_http, self.port, b"POST /RPC HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        self.assertTrue(answer.startswith(b"HTTP/1.0 403 "), answer[:100])

    @defer.inlineCallbacks
    def test_loopback_names_and_curl_are_served(self):
        port = self.port
        for host in (b"localhost", b"LOCALHOST:%d" % port, b"127.0.0.1", b"[::1]:%d" % port, b"[::1]", b"localhost."):
            status, _, _ = yield self.http(method=b"GET", path=b"/metrics", headers={b"Host": host})
            self.assertEqual(status, 200, host)
        for origin in (b"http://localhost:%d" % port, b"http://127.0.0.1:%d" % port, b"https://[::1]"):
            status, _, _ = yield self.http(method=b"GET", path=b"/metrics", headers={b"Origin": origin})
            self.assertEqual(status, 200, origin)
        # curl -d sends application/x-www-form-urlencoded and no Origin: served, as by jsonrpcs.
        status, data = yield self.active_off({b"Content-Type": b"application/x-www-form-urlencoded"})
        self.assertEqual((status, json.loads(data)["result"]), (200, {"omode": 1, "nmode": 0}))
        self.assertEqual(self.refusal_lines(), [])


class AllowedHostsTests(HTTPClientMixin, TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_allowed_hosts_and_the_listeners_own_address(self):
        self.service = yield start_service(self, None, rpc={"allowed_hosts": ["txuac.example.net"]})
        port = self.service.rpc.port
        for host, status in ((b"txuac.example.net:%d" % port, 200), (b"TXUAC.example.net", 200),
                             (b"127.0.0.1:%d" % port, 200),  # the address the request came in on
                             (b"localhost", 403), (b"other.example.net", 403)):
            got, _, _ = yield self.http(method=b"GET", path=b"/metrics", headers={b"Host": host})
            self.assertEqual(got, status, host)
        got, _, _ = yield self.http(method=b"GET", path=b"/metrics",
                                    headers={b"Origin": b"https://txuac.example.net:8443"})
        self.assertEqual(got, 200)

    def test_allowed_hosts_must_be_names(self):
        with self.assertRaises(ConfigError) as raised:
            settings_from_dict({"rpc": {"allowed_hosts": ["localhost", ""]}}, "uac.toml")
        self.assertIn("[rpc] allowed_hosts", str(raised.exception))


class HardeningTests(HTTPClientMixin, TestCase):
    """What a client can send that once gave a 500, a traceback or a reset: methods, huge
    and deep bodies, and failures inside txuac, each answered as documented."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, [make_row("1000", flags=1, auth_proxy="sip:127.0.0.1:9")],
                                           rpc={"max_request_size": 65536})
        self.port = self.service.rpc.port
        self.events = log_events(self)

    def events_at(self, level: LogLevel) -> list[dict]:
        return [e for e in self.events if e.get("log_level") is not None and e["log_level"] >= level]

    @defer.inlineCallbacks
    def test_other_methods_are_405_with_allow(self):
        for method in (b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"GET"):
            status, headers, data = yield self.http(method=method, body=b"{}" if method != b"HEAD" else None)
            self.assertEqual((status, headers.getRawHeaders(b"allow")), (405, [b"POST"]), method)
        for method in (b"PUT", b"DELETE", b"OPTIONS", b"POST"):
            status, headers, _ = yield self.http(method=method, path=b"/metrics", body=b"{}")
            self.assertEqual((status, headers.getRawHeaders(b"allow")), (405, [b"GET, HEAD"]), method)
        status, headers, data = yield self.http(method=b"HEAD", path=b"/metrics")
        self.assertEqual((status, data), (200, b""))
        self.assertEqual(self.events_at(LogLevel.warn), [])
        yield self.assertStillAnswering()

    def huge_body_head(self, size: int) -> bytes:
        return (b"POST /RPC HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % size)

    @defer.inlineCallbacks
    def test_huge_body_answered_413_before_it_is_read(self):
        # The headers alone get the answer: nothing of the body was needed.
        answer = yield threads.deferToThread(raw_http, self.port, self.huge_body_head(10_000_000))
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        self.assertTrue(answer.endswith(b"\r\n\r\nrequest body too large\n"), answer[-200:])
        yield wait_until(lambda: not self.service.rpc.site.lingering)
        # A client that sends the whole 10 MB anyway reads the 413, not a reset.
        chunks = [b"x" * 65536] * (10_000_000 // 65536)
        answer = yield threads.deferToThread(raw_http, self.port, self.huge_body_head(65536 * len(chunks)), chunks)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        self.assertFalse(answer.endswith(b"<reset>"))
        yield wait_until(lambda: not self.service.rpc.site.lingering)
        self.assertEqual(self.events_at(LogLevel.warn), [])
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_huge_chunked_body_answered_413(self):
        head = b"POST /RPC HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        answer = yield threads.deferToThread(raw_http, self.port, head, [chunk] * 160 + [b"0\r\n\r\n"])
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        self.assertFalse(answer.endswith(b"<reset>"))
        yield wait_until(lambda: not self.service.rpc.site.lingering)
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_deep_nesting_is_an_invalid_request(self):
        for depth in (1000, 30_000):
            status, headers, data = yield self.http(body=b"[" * depth + b"]" * depth)
            self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
            self.assertEqual((status, json.loads(data)["error"]["code"]), (400, -32600))
        params = {"jsonrpc": "2.0", "method": "uac.reg_info", "id": 1}
        body = json.dumps(params)[:-1].encode() + b', "params": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        status, _, data = yield self.http(body=body)
        self.assertEqual((status, json.loads(data)["error"]["code"]), (400, -32600))
        warnings = self.events_at(LogLevel.warn)
        self.assertEqual([e["log_level"] for e in warnings], [LogLevel.warn])
        self.assertIn("nested deeper than", formatEvent(warnings[0]))
        yield self.assertStillAnswering()

    @defer.inlineCallbacks
    def test_failures_inside_are_json_rpc_errors(self):
        self.service.rpc.dispatcher.register("test.unencodable", lambda: object())
        self.patch(self.service.rpc.metrics, "render", lambda: 1 / 0)
        for path, body in ((b"/RPC", b'{"jsonrpc": "2.0", "method": "test.unencodable", "id": 1}'), (b"/metrics", None)):
            status, headers, data = yield self.http(method=b"POST" if body else b"GET", path=path, body=body)
            self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"], path)
            self.assertEqual((status, json.loads(data)["error"]["code"]), (500, -32603), path)
        self.flushLoggedErrors(TypeError, ZeroDivisionError)
        yield self.assertStillAnswering()


class AuditTests(HTTPClientMixin, TestCase):
    """Every state-changing call is in the audit log with who made it; reads are not."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.service = yield start_service(self, [make_row("1000", flags=1, auth_proxy="sip:127.0.0.1:9")],
                                           rpc={"token": TOKEN})
        self.token = TOKEN
        self.events = log_events(self)

    def audit(self) -> list[dict]:
        return [e for e in self.events if e.get("log_namespace") == "txuac.admin.audit"]

    @defer.inlineCallbacks
    def test_state_changes_are_audited_with_secrets_masked(self):
        yield self.result("uac.reg_info", "l_uuid", "1000")
        yield self.result("uac.reg_dump")
        self.assertEqual(self.audit(), [])
        yield self.result("uac.reg_active", 0)
        yield self.result("uac.reg_add", "2000", "u", "d.example", "u", "r.example", ".", "u", "secret-pw", ".",
                          "sip:127.0.0.1:9", 600, 1, 0, ".", ".")
        yield self.result("uac.reg_enable", {"attr": "l_uuid", "val": "1000"})
        yield self.error("uac.reg_remove", "nobody")
        lines = [(e["method"], e["params"], e["outcome"], e["log_level"]) for e in self.audit()]
        self.assertEqual(lines, [
            ("uac.reg_active", [0], "ok", LogLevel.info),
            ("uac.reg_add", ["2000", "u", "d.example", "u", "r.example", ".", "u", "********", ".",
                             "sip:127.0.0.1:9", 600, 1, 0, ".", "."], "ok", LogLevel.info),
            ("uac.reg_enable", {"attr": "l_uuid", "val": "1000"}, "ok", LogLevel.info),
            ("uac.reg_remove", ["nobody"], "error 404: Record not found", LogLevel.info),
        ])
        for event in self.audit():
            self.assertRegex(event["peer"], r"\A127\.0\.0\.1:[0-9]+\Z")
            self.assertNotIn("secret-pw", formatEvent(event))
        self.assertTrue(formatEvent(self.audit()[0]).startswith("127.0.0.1:"))

    @defer.inlineCallbacks
    def test_failed_token_checks_are_logged_rate_limited(self):
        for _ in range(5):
            status, _, _ = yield self.http(method=b"GET", path=b"/metrics", token="wrong-" + TOKEN)
            self.assertEqual(status, 401)
        lines = [formatEvent(e) for e in self.events if "no valid token" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("from 127.0.0.1:", lines[0])
        self.assertNotIn(TOKEN, lines[0])
        yield self.service.rpc.stopService()  # the window's summary is written when the server stops
        summary = [formatEvent(e) for e in self.events if "suppressed" in formatEvent(e)]
        self.assertEqual(summary, ["4 more requests without a valid token from 127.0.0.1 suppressed in the last 10 s"])
