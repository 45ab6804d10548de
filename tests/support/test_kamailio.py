"""The Kamailio registrar harness (tests/support/kamailio.py) against real clients.

SIPp is the UAC for the digest flows it can compute (MD5, qop=auth or none, 401 and 407).
Challenges SIPp cannot answer (SHA-256) and exact header texts are checked with a plain
UDP socket of the test, whose digest responses are computed here (RFC 2617 / RFC 7616).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
import uuid

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.support.kamailio import KamailioError, KamailioRegistrar, aor_user, usrloc_schema_files
from tests.support.peers import free_port, require_program, wait_for
from tests.support.postgres import PostgresCluster

HOST = "127.0.0.1"

REGISTER = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@{domain}>;tag=[pid]SIPpTag[call_number]
      To: <sip:{user}@{domain}>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <{contact}>
      Max-Forwards: 70
      Expires: {expires}
      Content-Length: 0

    ]]>
  </send>
  <recv response="{challenge}" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@{domain}>;tag=[pid]SIPpTag[call_number]
      To: <sip:{user}@{domain}>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <{contact}>
      {authentication}
      Max-Forwards: 70
      Expires: {expires}
      Content-Length: 0

    ]]>
  </send>
  <recv response="{final}"/>
</scenario>
"""

# OPTIONS (or any non-REGISTER method) challenged, then answered once authenticated.
REQUEST = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="request with digest">
  <send retrans="500">
    <![CDATA[
      {method} sip:{user}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@{domain}>;tag=[pid]SIPpTag[call_number]
      To: <sip:{user}@{domain}>
      Call-ID: [call_id]
      CSeq: 1 {method}
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="{challenge}" auth="true"/>
  <send retrans="500">
    <![CDATA[
      {method} sip:{user}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@{domain}>;tag=[pid]SIPpTag[call_number]
      To: <sip:{user}@{domain}>
      Call-ID: [call_id]
      CSeq: 2 {method}
      [authentication username={user} password={password}]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


# --- a minimal UAC on a plain socket, for exact header checks and SHA-256 ------------------


def header(response: str, name: str) -> str | None:
    """The value of the first header ``name`` in ``response`` (case-insensitive), or None."""
    for line in response.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def status(response: str) -> int:
    return int(response.split(" ", 2)[1])


def challenge_params(value: str) -> dict[str, str]:
    """The parameters of a 'Digest realm="x", nonce="y", ...' challenge."""
    return {k.lower(): v.strip('"') for k, v in re.findall(r'([\w-]+)\s*=\s*("[^"]*"|[^,\s]+)', value)}


def digest_authorization(challenge: dict[str, str], user: str, password: str, method: str, uri: str) -> str:
    """Digest credentials answering ``challenge`` (MD5 or SHA-256; qop=auth if offered)."""
    algorithm = challenge.get("algorithm", "MD5")
    hash_name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    ha1 = h(f"{user}:{challenge['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    params = f'username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", uri="{uri}"'
    if "auth" in challenge.get("qop", "").split(","):
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = h(f"{ha1}:{challenge['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        params += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = h(f"{ha1}:{challenge['nonce']}:{ha2}")
    return f'Digest {params}, response="{response}", algorithm={algorithm}'


class SocketUAC:
    """Sends one request at a time over UDP and returns the final response (blocking, short)."""

    def __init__(self, registrar: KamailioRegistrar):
        self.registrar = registrar
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(2.0)
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.cseq = 0

    def send(self, method: str, user: str, authorization: str | None = None, expires: int = 60) -> str:
        self.cseq += 1
        domain = self.registrar.realm
        lines = [
            f"{method} {self.registrar.uri()} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
            f"From: <sip:{user}@{domain}>;tag=f{self.port}",
            f"To: <sip:{user}@{domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{user}@{HOST}:{self.port}>",
            "Max-Forwards: 70",
        ]
        if method == "REGISTER":
            lines.append(f"Expires: {expires}")
        if authorization:
            name = "Proxy-Authorization" if self.registrar.proxy else "Authorization"
            lines.append(f"{name}: {authorization}")
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.registrar.address)
        while True:
            try:
                response = self.sock.recv(65535).decode("utf-8", "replace")
            except socket.timeout:
                raise AssertionError(self.registrar.explain(f"no response to {method} CSeq {self.cseq}"))
            if status(response) >= 200:
                return response

    def authenticate(self, method: str, user: str, password: str) -> tuple[str, str]:
        """(challenge response, response to the request with credentials)."""
        challenge = self.send(method, user)
        name = "Proxy-Authenticate" if self.registrar.proxy else "WWW-Authenticate"
        value = header(challenge, name)
        if value is None:
            raise AssertionError(self.registrar.explain(f"no {name} in:\n{challenge}"))
        credentials = digest_authorization(challenge_params(value), user, password, method, self.registrar.uri())
        return challenge, self.send(method, user, credentials)

    def close(self) -> None:
        self.sock.close()


# --- the tests ---------------------------------------------------------------------------


class KamailioTestCase(TestCase):
    timeout = 60

    def uac(self, registrar: KamailioRegistrar) -> SocketUAC:
        uac = SocketUAC(registrar)
        self.addCleanup(uac.close)
        return uac

    def run_sipp(self, registrar: KamailioRegistrar, scenario: str, *args: str, transport: str = "u1",
                 local_port: int | None = None, calls: int = 1):
        """Run SIPp as a UAC against ``registrar`` in a thread; fires with (exit status, report text)."""
        sipp = require_program("sipp")
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        path = os.path.join(workdir, "scenario.xml")
        with open(path, "w") as f:
            f.write(scenario)
        messages = os.path.join(workdir, "messages.log")
        errors = os.path.join(workdir, "errors.log")
        if local_port is None:
            local_port = free_port(socket.SOCK_STREAM if transport.startswith("t") else socket.SOCK_DGRAM)
        argv = [
            sipp, "-sf", path, "-t", transport, "-i", HOST, "-p", str(local_port), "-m", str(calls),
            "-recv_timeout", "5000", "-timeout", "20s", "-trace_msg", "-message_file", messages,
            "-trace_err", "-error_file", errors, *args, f"{HOST}:{registrar.port}",
        ]

        def run():
            done = subprocess.run(argv, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, timeout=40)
            report = [f"$ {' '.join(argv)} -> {done.returncode}", done.stderr.decode("utf-8", "replace")[-2000:]]
            for name in (errors, messages):
                if os.path.exists(name):
                    with open(name, "rb") as f:
                        report.append(f"--- {name} ---\n" + f.read().decode("utf-8", "replace")[-6000:])
            return done.returncode, registrar.explain("\n".join(report))

        return threads.deferToThread(run)

    def register_scenario(self, registrar: KamailioRegistrar, user: str, password: str, final: int = 200,
                          expires: int = 60, contact: str | None = None, challenge: int = 401) -> str:
        return REGISTER.format(
            user=user, domain=registrar.realm, expires=expires, final=final, challenge=challenge,
            contact=contact or f"sip:{user}@[local_ip]:[local_port]",
            authentication=f"[authentication username={user} password={password}]",
        )


class RegisterTests(KamailioTestCase):
    """SIPp registers through the digest challenge; the bindings are read back over kamcmd."""

    @defer.inlineCallbacks
    def test_register_md5_qop_auth(self):
        """401 (qop=auth, MD5) then 200; the contact is in contacts(aor) and counted."""
        registrar = KamailioRegistrar(self)
        self.assertEqual(registrar.password_for("alice"), "pw-alice")
        port = free_port()
        rc, report = yield self.run_sipp(
            registrar, self.register_scenario(registrar, "alice", registrar.password_for("alice")), local_port=port)
        self.assertEqual(rc, 0, report)
        expected = [f"sip:alice@{HOST}:{port}"]
        self.assertEqual(registrar.contacts("sip:alice@test.example"), expected, report)
        self.assertEqual((yield registrar.contacts_async("alice@test.example")), expected)
        self.assertEqual((yield registrar.contact_count_async()), 1)
        self.assertEqual(registrar.user_count(), 1)
        self.assertEqual(registrar.aors(), ["alice"])
        self.assertEqual(registrar.contacts("sip:nobody@test.example"), [])
        binding = registrar.bindings("alice")[0]
        self.assertEqual(binding["CSeq"], "2")
        self.assertLessEqual(int(binding["Expires"]), 60)
        self.assertIn("auth REGISTER user=alice rc=1", registrar.script_log())

    @defer.inlineCallbacks
    def test_wrong_password_is_forbidden(self):
        """A wrong response after the challenge gets 403 Forbidden (rc -2 in the script) and no binding."""
        registrar = KamailioRegistrar(self)
        rc, report = yield self.run_sipp(registrar, self.register_scenario(registrar, "bob", "wrong", final=403))
        self.assertEqual(rc, 0, report)
        self.assertEqual(registrar.contacts("bob"), [], report)
        self.assertIn("auth REGISTER user=bob rc=-2", registrar.script_log(), report)

    @defer.inlineCallbacks
    def test_wrong_password_rechallenged(self):
        """With rechallenge_wrong_password a wrong response is challenged again (401)."""
        registrar = KamailioRegistrar(self, rechallenge_wrong_password=True)
        rc, report = yield self.run_sipp(registrar, self.register_scenario(registrar, "bob", "wrong", final=401))
        self.assertEqual(rc, 0, report)
        self.assertEqual(registrar.contacts("bob"), [], report)

    @defer.inlineCallbacks
    def test_expires_zero_removes_binding(self):
        """A second (authenticated) REGISTER with Expires: 0 removes the binding."""
        registrar = KamailioRegistrar(self)
        port = free_port()
        password = registrar.password_for("carol")
        scenario = self.register_scenario(registrar, "carol", password)
        rc, report = yield self.run_sipp(registrar, scenario, local_port=port)
        self.assertEqual(rc, 0, report)
        self.assertEqual((yield registrar.wait_for_contacts("carol", 1)), [f"sip:carol@{HOST}:{port}"])
        rc, report = yield self.run_sipp(
            registrar, self.register_scenario(registrar, "carol", password, expires=0), local_port=port)
        self.assertEqual(rc, 0, report)
        self.assertEqual(registrar.contacts("carol"), [], report)
        self.assertEqual(registrar.contact_count(), 0)

    @defer.inlineCallbacks
    def check_location_table(self, mode: int):
        """With ``usrloc_db_url`` a binding and its removal reach the location table (at once
        written through, within the usrloc timer's second written back)."""
        database = PostgresCluster(self)
        for path in usrloc_schema_files("postgres"):
            database.psql(file=path)
        registrar = KamailioRegistrar(self, usrloc_db_url=database.url, usrloc_db_mode=mode)
        port = free_port()
        password = registrar.password_for("dave")
        rows: list[str] = []

        def table_holds(expected: list[str]) -> bool:
            rows[:] = database.psql("SELECT username, contact FROM location").splitlines()
            return rows == expected

        rc, report = yield self.run_sipp(registrar, self.register_scenario(registrar, "dave", password),
                                         local_port=port)
        self.assertEqual(rc, 0, report)
        expected = [f"dave|sip:dave@{HOST}:{port}"]
        if mode == 1:
            self.assertTrue(table_holds(expected), rows)
        self.assertTrue(wait_for(lambda: table_holds(expected), 10, 0.1), registrar.explain(f"table: {rows}"))
        rc, report = yield self.run_sipp(
            registrar, self.register_scenario(registrar, "dave", password, expires=0), local_port=port)
        self.assertEqual(rc, 0, report)
        self.assertTrue(wait_for(lambda: table_holds([]), 10, 0.1), registrar.explain(f"table: {rows}"))

    def test_location_table_written_through(self):
        return self.check_location_table(1)

    def test_location_table_written_back(self):
        return self.check_location_table(2)

    @defer.inlineCallbacks
    def test_tcp(self):
        """With tcp=True the same port takes REGISTERs over TCP."""
        registrar = KamailioRegistrar(self, tcp=True)
        port = free_port(socket.SOCK_STREAM)
        scenario = self.register_scenario(
            registrar, "dave", registrar.password_for("dave"), contact="sip:dave@[local_ip]:[local_port];transport=tcp")
        rc, report = yield self.run_sipp(registrar, scenario, transport="t1", local_port=port)
        self.assertEqual(rc, 0, report)
        self.assertEqual(registrar.contacts("dave"), [f"sip:dave@{HOST}:{port};transport=tcp"], report)
        self.assertEqual(registrar.bindings("dave")[0]["Socket"], f"tcp:{HOST}:{registrar.port}")

    @defer.inlineCallbacks
    def test_many_accounts(self):
        """Passwords come from the username, so 300 accounts need no table (SIPp reads a CSV);
        with rpc_fifo, binding_map() reads them all through jsonrpcs."""
        registrar = KamailioRegistrar(self, rpc_fifo=True)
        users = [f"user{i:04d}" for i in range(300)]
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        csv = os.path.join(workdir, "users.csv")
        with open(csv, "w") as f:
            f.write("SEQUENTIAL\n")
            for user in users:
                f.write(f"{user};[authentication username={user} password={registrar.password_for(user)}]\n")
        scenario = REGISTER.format(
            user="[field0]", domain=registrar.realm, expires=300, final=200, challenge=401,
            contact="sip:[field0]@[local_ip]:[local_port]", authentication="[field1]",
        )
        rc, report = yield self.run_sipp(registrar, scenario, "-inf", csv, "-r", "300", "-l", "100",
                                         calls=len(users))
        self.assertEqual(rc, 0, report)
        self.assertEqual((yield registrar.contact_count_async()), len(users), report)
        self.assertEqual(sorted(registrar.aors()), users)
        bindings = registrar.binding_map()
        self.assertEqual(sorted(bindings), users)
        self.assertEqual({len(contacts) for contacts in bindings.values()}, {1})
        self.assertEqual(bindings["user0007"], registrar.contacts("user0007"))


class ChallengeTests(KamailioTestCase):
    """The challenge variants: algorithm, qop, 401 or 407, which methods, stale nonces."""

    def test_md5_challenge_text(self):
        registrar = KamailioRegistrar(self, realm="example.org")
        response = self.uac(registrar).send("REGISTER", "alice")
        self.assertEqual(status(response), 401, registrar.explain(response))
        value = header(response, "WWW-Authenticate")
        self.assertRegex(value, r'^Digest realm="example.org", nonce="[^"]+", qop="auth"$')

    def test_sha256_challenge_and_check(self):
        """SHA-256 mode: algorithm=SHA-256 in the challenge, and an RFC 7616 response is accepted."""
        registrar = KamailioRegistrar(self, algorithm="SHA-256")
        uac = self.uac(registrar)
        challenge, final = uac.authenticate("REGISTER", "erin", registrar.password_for("erin"))
        value = header(challenge, "WWW-Authenticate")
        self.assertEqual(status(challenge), 401)
        self.assertIn("algorithm=SHA-256", value, registrar.explain(challenge))
        self.assertIn('qop="auth"', value)
        self.assertEqual(status(final), 200, registrar.explain(final))
        self.assertEqual(registrar.contacts("erin"), [f"sip:erin@{HOST}:{uac.port}"], registrar.explain())

    def test_sha256_rejects_md5_response(self):
        """An MD5-sized response to a SHA-256 challenge is malformed for Kamailio (rc -1): re-challenged."""
        registrar = KamailioRegistrar(self, algorithm="SHA-256")
        uac = self.uac(registrar)
        challenge = challenge_params(header(uac.send("REGISTER", "erin"), "WWW-Authenticate"))
        challenge["algorithm"] = "MD5"
        credentials = digest_authorization(challenge, "erin", registrar.password_for("erin"), "REGISTER",
                                           registrar.uri())
        response = uac.send("REGISTER", "erin", credentials)
        self.assertEqual(status(response), 401, registrar.explain(response))
        self.assertIn("auth REGISTER user=erin rc=-1", registrar.script_log())

    def test_no_qop(self):
        """qop=None: the challenge has no qop, and an RFC 2069 response (no qop, nc, cnonce) is accepted."""
        registrar = KamailioRegistrar(self, qop=None)
        challenge, final = self.uac(registrar).authenticate("REGISTER", "frank", registrar.password_for("frank"))
        value = header(challenge, "WWW-Authenticate")
        self.assertNotIn("qop", value, registrar.explain(challenge))
        self.assertNotIn("algorithm", value)
        self.assertEqual(status(final), 200, registrar.explain(final))

    @defer.inlineCallbacks
    def test_no_qop_sipp(self):
        """SIPp answers a challenge without qop too."""
        registrar = KamailioRegistrar(self, qop=None)
        rc, report = yield self.run_sipp(registrar, self.register_scenario(registrar, "gina", "pw-gina"))
        self.assertEqual(rc, 0, report)
        self.assertEqual(len(registrar.contacts("gina")), 1, report)

    def test_auth_int_challenge(self):
        """qop="auth-int" can be offered (Kamailio 5.6 cannot verify such responses: see the report)."""
        registrar = KamailioRegistrar(self, qop="auth-int")
        response = self.uac(registrar).send("REGISTER", "hank")
        self.assertIn('qop="auth-int"', header(response, "WWW-Authenticate"))

    def test_options_not_challenged_by_default(self):
        registrar = KamailioRegistrar(self)
        response = self.uac(registrar).send("OPTIONS", "ivy")
        self.assertEqual(status(response), 200, registrar.explain(response))

    @defer.inlineCallbacks
    def test_challenge_all_options_and_info(self):
        """challenge_all: OPTIONS and INFO get 401, then 200 once authenticated (SIPp)."""
        registrar = KamailioRegistrar(self, challenge_all=True)
        for method in ("OPTIONS", "INFO", "MESSAGE"):
            scenario = REQUEST.format(method=method, user="jack", domain=registrar.realm, challenge=401,
                                      password=registrar.password_for("jack"))
            rc, report = yield self.run_sipp(registrar, scenario)
            self.assertEqual(rc, 0, report)
            self.assertIn(f"auth {method} user=jack rc=1", registrar.script_log(), report)

    def test_proxy_options_407(self):
        """Proxy mode answers an OPTIONS with 407 and a Proxy-Authenticate challenge."""
        registrar = KamailioRegistrar(self, proxy=True)
        challenge, final = self.uac(registrar).authenticate("OPTIONS", "kim", registrar.password_for("kim"))
        self.assertEqual(status(challenge), 407, registrar.explain(challenge))
        self.assertIsNone(header(challenge, "WWW-Authenticate"))
        self.assertRegex(
            header(challenge, "Proxy-Authenticate"), r'^Digest realm="test.example", nonce="[^"]+", qop="auth"$')
        self.assertEqual(status(final), 200, registrar.explain(final))

    @defer.inlineCallbacks
    def test_proxy_sipp(self):
        """SIPp answers 407 with Proxy-Authorization: for OPTIONS and for REGISTER."""
        registrar = KamailioRegistrar(self, proxy=True)
        scenario = REQUEST.format(method="OPTIONS", user="lee", domain=registrar.realm, challenge=407,
                                  password=registrar.password_for("lee"))
        rc, report = yield self.run_sipp(registrar, scenario)
        self.assertEqual(rc, 0, report)
        rc, report = yield self.run_sipp(registrar, self.register_scenario(registrar, "lee", "pw-lee", challenge=407))
        self.assertEqual(rc, 0, report)
        self.assertEqual(len(registrar.contacts("lee")), 1, report)

    def test_stale_nonce(self):
        """A nonce older than nonce_expire is re-challenged with stale=true."""
        registrar = KamailioRegistrar(self, nonce_expire=1)
        uac = self.uac(registrar)
        challenge = challenge_params(header(uac.send("REGISTER", "max"), "WWW-Authenticate"))
        credentials = digest_authorization(challenge, "max", registrar.password_for("max"), "REGISTER", registrar.uri())
        time.sleep(2.2)
        response = uac.send("REGISTER", "max", credentials)
        self.assertEqual(status(response), 401, registrar.explain(response))
        self.assertIn("stale=true", header(response, "WWW-Authenticate"))


class HarnessTests(TestCase):
    """Start-up failures, shutdown and helpers of the harness itself."""

    def test_stop_by_pid_keeps_log(self):
        registrar = KamailioRegistrar(self)
        pid = registrar.pid
        self.assertTrue(registrar.running())
        registrar.stop()
        self.assertFalse(registrar.running())
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertIn("signal 15 received", registrar.log())
        registrar.stop()  # idempotent (cleanup calls it again)

    def test_start_failure_reports_log(self):
        """A cfg Kamailio rejects makes the start fail at once, with Kamailio's log in the message."""
        require_program("kamailio")  # skips here, not inside assertRaises, where a skip is a failure
        with self.assertRaises(KamailioError) as caught:
            KamailioRegistrar(self, defines={"NONCE_EXPIRE": '"not-a-number"'})
        self.assertIn("did not start", str(caught.exception))
        self.assertIn("kamailio.log", str(caught.exception))
        self.assertIn("ERROR", str(caught.exception))

    def test_kamcmd_error(self):
        registrar = KamailioRegistrar(self)
        self.assertRaises(KamailioError, registrar.kamcmd, "no.such.command")
        self.assertIn("kamailio 5.", registrar.kamcmd("core.version"))

    def test_aor_user(self):
        for aor in ("sip:alice@example.com", "<sip:alice@example.com;transport=tcp>", "alice@x", "alice",
                    "sips:alice@x"):
            self.assertEqual(aor_user(aor), "alice")

    def test_bad_options(self):
        self.assertRaises(ValueError, KamailioRegistrar, self, algorithm="SHA-512", start=False)
        self.assertRaises(ValueError, KamailioRegistrar, self, qop="bogus", start=False)
        self.assertRaises(ValueError, KamailioRegistrar, self, realm='a"b', start=False)
        self.assertRaises(ValueError, KamailioRegistrar, self, usrloc_db_url="sqlite:///x", start=False)
        self.assertRaises(ValueError, KamailioRegistrar, self, usrloc_db_url="postgres://x", usrloc_db_mode=3,
                          start=False)
