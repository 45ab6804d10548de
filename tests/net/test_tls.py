"""txuac to txuac over TLS, with a PKI the test makes itself (RFC 5922 server identity),
and txuac's accounts against a real Kamailio TLS registrar (the errors an operator reads).

The client resolves the SIP domain through a twisted.names server on loopback
and must check the server's certificate against the domain of the URI.
Twisted 26.10 with pyOpenSSL 26.4 warns (DeprecationWarning) that it passes
pyOpenSSL X509/PKey objects when building contexts: theirs, not ours.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.dns_zone import Zone, a, serve_zone, srv
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.services import start_core_service, start_uac, wait_online
from tests.support.sip_messages import options_request
from tests.support.stores import sqlite_uacreg
from txuac.config import TLSSettings
from txuac.errors import ConfigError, TransportError
from txuac.net.tls import client_options_factory, server_options
from txuac.sip.uri import parse_uri

SIP_NAME = "sip.test.example"
NAME_MISMATCH = f"the certificate does not name {SIP_NAME} (DNSMismatch)"
UNTRUSTED = f"certificate verify failed: unable to get local issuer certificate (verifying {SIP_NAME})"


class PKI:
    """Certificates and keys written as PEM files under ``directory``."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def write(self, name: str, *items) -> str:
        data = b""
        for item in items:
            if isinstance(item, x509.Certificate):
                data += item.public_bytes(serialization.Encoding.PEM)
            else:
                data += item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    @staticmethod
    def issue(common_name: str, issuer=None, ca: bool = False, dns_names=(), ips=()):
        """A certificate and its key, self-signed when ``issuer`` (certificate, key) is None."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False), critical=True)
        else:
            names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()), key


def make_pki(directory: str) -> PKI:
    """ca.pem trusted by the client; server-*.pem certificates with their keys."""
    pki = PKI(directory)
    ca = pki.issue("txuac test CA", ca=True)
    pki.write("ca.pem", ca[0])
    good = pki.issue(SIP_NAME, issuer=ca, dns_names=[SIP_NAME], ips=["127.0.0.1"])
    pki.write("server.pem", good[0])
    pki.write("server-key.pem", good[1])
    other = pki.issue("other.test.example", issuer=ca, dns_names=["other.test.example", "srvhost.test.example"])
    pki.write("other.pem", other[0])
    pki.write("other-key.pem", other[1])
    rogue_ca = pki.issue("txuac rogue CA", ca=True)
    rogue = pki.issue(SIP_NAME, issuer=rogue_ca, dns_names=[SIP_NAME], ips=["127.0.0.1"])
    pki.write("rogue.pem", rogue[0])
    pki.write("rogue-key.pem", rogue[1])
    intermediate = pki.issue("txuac intermediate CA", issuer=ca, ca=True)
    chained = pki.issue(SIP_NAME, issuer=intermediate, dns_names=[SIP_NAME], ips=["127.0.0.1"])
    pki.write("chained.pem", chained[0], intermediate[0])  # leaf first, then the intermediate
    pki.write("chained-leaf-only.pem", chained[0])
    pki.write("chained-key.pem", chained[1])
    return pki


class TLSInteropTests(TestCase):

    timeout = 30

    def setUp(self):
        self.pki = make_pki(os.path.abspath(self.mktemp()))
        self.zone = Zone({
            SIP_NAME: [a("127.0.0.1")],
            "srvhost.test.example": [a("127.0.0.1")],
        })
        self.dns_port = serve_zone(self, self.zone)
        self.received = []

    def server(self, certificate: str = "server.pem", key: str = "server-key.pem") -> int:
        service = start_core_service(self, {"listen": ["tls:127.0.0.1:0"]},
                                {"certificate": self.pki.path(certificate), "private_key": self.pki.path(key)})

        def answer(incoming):
            self.received.append(incoming)
            incoming.respond(200)

        service.stack.set_handler("OPTIONS", answer)
        return service.sip.bound_address("tls").port

    def client(self, **tls):
        return start_core_service(self, {"listen": ["udp:127.0.0.1:0"], "dns_servers": [f"127.0.0.1:{self.dns_port}"]},
                             {"ca_file": self.pki.path("ca.pem"), **tls})

    @defer.inlineCallbacks
    def assertRefused(self, client, uri: str, why: str):
        """send_request fails with a TransportError that says ``why``, and nothing reached the server."""
        error = yield self.assertFailure(client.stack.send_request(options_request(uri)), TransportError)
        self.assertEqual(self.received, [])
        self.assertEqual(client.stack.pending_client_transactions, 0)
        self.assertIn(why, str(error))
        self.assertIn("TLS connection to tls:127.0.0.1:", str(error))

    @defer.inlineCallbacks
    def test_sips_by_name(self):
        """sips: with a host name resolved by DNS; the certificate matches the name."""
        port = self.server()
        client = self.client()
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}:{port}"))
        self.assertEqual(response.status, 200)
        self.assertEqual([r.source.transport for r in self.received], ["tls"])
        self.assertIn((SIP_NAME, "A"), self.zone.queries)
        self.assertIn("TLS", self.received[0].request.top_via.transport.upper())

    @defer.inlineCallbacks
    def test_sips_by_ip(self):
        """An IP address is checked against the iPAddress subjectAltName."""
        port = self.server()
        response = yield self.client().stack.send_request(options_request(f"sips:x@127.0.0.1:{port}"))
        self.assertEqual(response.status, 200)
        self.assertEqual(self.zone.queries, [])

    @defer.inlineCallbacks
    def test_sips_domain_through_srv(self):
        """RFC 5922 4.1: the certificate must match the SIP domain, not the SRV target."""
        port = self.server()
        self.zone.add(f"_sips._tcp.{SIP_NAME}", srv(10, 0, port, "srvhost.test.example"))
        client = self.client()
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}"))
        self.assertEqual(response.status, 200)
        self.assertIn((f"_sips._tcp.{SIP_NAME}", "SRV"), self.zone.queries)

    @defer.inlineCallbacks
    def test_certificate_for_the_srv_target_only_is_refused(self):
        port = self.server("other.pem", "other-key.pem")  # srvhost.test.example, not the domain
        self.zone.add(f"_sips._tcp.{SIP_NAME}", srv(10, 0, port, "srvhost.test.example"))
        yield self.assertRefused(self.client(), f"sips:x@{SIP_NAME}", NAME_MISMATCH)

    @defer.inlineCallbacks
    def test_wrong_hostname_refused(self):
        port = self.server("other.pem", "other-key.pem")
        client = self.client()
        yield self.assertRefused(client, f"sips:x@{SIP_NAME}:{port}", NAME_MISMATCH)
        yield self.assertRefused(client, f"sips:x@127.0.0.1:{port}", "IPAddressMismatch")  # no IP SAN there

    @defer.inlineCallbacks
    def test_verified_connection_not_reused_for_another_name(self):
        """A connection verified for one domain is not reused for another domain at the same
        address: the second name gets its own handshake, and its mismatch is refused."""
        port = self.server()
        self.zone.add("elsewhere.test.example", a("127.0.0.1"))
        client = self.client()
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}:{port}"))
        self.assertEqual(response.status, 200)
        self.received.clear()
        yield self.assertRefused(client, f"sips:x@elsewhere.test.example:{port}", "elsewhere.test.example")
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}:{port}"))
        self.assertEqual(response.status, 200)  # the first connection still serves its own name

    @defer.inlineCallbacks
    def test_outbound_proxy_identified_by_its_own_host(self):
        """RFC 5922 4.1: through an outbound proxy the certificate must name the proxy's
        host (the URI resolved), not the Request-URI's domain."""
        port = self.server("other.pem", "other-key.pem")  # srvhost.test.example
        client = self.client()
        proxy = parse_uri(f"sips:srvhost.test.example:{port}")
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}"), proxy)
        self.assertEqual(response.status, 200)
        self.received.clear()
        error = yield self.assertFailure(
            client.stack.send_request(options_request(f"sips:x@srvhost.test.example"),
                                      parse_uri(f"sips:{SIP_NAME}:{port}")), TransportError)
        self.assertIn(NAME_MISMATCH, str(error))

    @defer.inlineCallbacks
    def test_server_names_sets_the_name_a_proxy_certificate_carries(self):
        """[tls] server_names: the proxy srvhost.test.example presents a certificate for the
        provider's domain."""
        port = self.server()  # sip.test.example only
        proxy = parse_uri(f"sips:srvhost.test.example:{port}")
        error = yield self.assertFailure(
            self.client().stack.send_request(options_request(f"sips:x@{SIP_NAME}"), proxy), TransportError)
        self.assertIn("the certificate does not name srvhost.test.example (DNSMismatch)", str(error))
        client = self.client(server_names={"SRVHOST.test.example": SIP_NAME})
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}"), proxy)
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_unknown_ca_refused(self):
        port = self.server("rogue.pem", "rogue-key.pem")
        yield self.assertRefused(self.client(), f"sips:x@{SIP_NAME}:{port}", UNTRUSTED)

    @defer.inlineCallbacks
    def test_intermediate_sent_with_the_certificate(self):
        """The certificate file holds leaf + intermediate; the client trusts only the root."""
        port = self.server("chained.pem", "chained-key.pem")
        response = yield self.client().stack.send_request(options_request(f"sips:x@{SIP_NAME}:{port}"))
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_missing_intermediate_refused(self):
        port = self.server("chained-leaf-only.pem", "chained-key.pem")
        yield self.assertRefused(self.client(), f"sips:x@{SIP_NAME}:{port}", UNTRUSTED)

    @defer.inlineCallbacks
    def test_verify_server_false_accepts_any_certificate(self):
        port = self.server("rogue.pem", "rogue-key.pem")
        client = self.client(verify_server=False)
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}:{port}"))
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_client_with_its_own_certificate(self):
        """A client certificate (with its chain) in [tls] does not get in the way of verifying the server."""
        port = self.server()
        client = self.client(certificate=self.pki.path("chained.pem"), private_key=self.pki.path("chained-key.pem"))
        response = yield client.stack.send_request(options_request(f"sips:x@{SIP_NAME}:{port}"))
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_request_without_content_length(self):
        """The stack adds Content-Length, which streams require (RFC 3261 18.3, 20.14)."""
        port = self.server()
        request = options_request(f"sips:x@{SIP_NAME}:{port}", content_length=False)
        response = yield self.client().stack.send_request(request)
        self.assertEqual(response.status, 200)



class TLSConfigTests(SynchronousTestCase):

    def setUp(self):
        self.pki = make_pki(os.path.abspath(self.mktemp()))

    def test_mismatched_key_is_config_error(self):
        settings = TLSSettings(certificate=self.pki.path("server.pem"), private_key=self.pki.path("other-key.pem"))
        self.assertRaises(ConfigError, server_options, settings)

    def test_missing_files(self):
        self.assertRaises(ConfigError, server_options, TLSSettings())
        self.assertRaises(ConfigError, server_options,
                          TLSSettings(certificate=self.pki.path("nope.pem"), private_key=self.pki.path("nope.pem")))
        self.assertRaises(ConfigError, client_options_factory, TLSSettings(ca_file=self.pki.path("nope.pem")))

    def test_ca_file_without_certificate(self):
        empty = self.pki.path("empty.pem")
        with open(empty, "w") as f:
            f.write("not a certificate\n")
        self.assertRaises(ConfigError, client_options_factory, TLSSettings(ca_file=empty))

    def test_corrupt_certificate_is_config_error(self):
        bad = self.pki.path("bad.pem")
        with open(bad, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        self.assertRaises(ConfigError, client_options_factory, TLSSettings(ca_file=bad))
        self.assertRaises(ConfigError, server_options,
                          TLSSettings(certificate=bad, private_key=self.pki.path("server-key.pem")))

    def test_chain_is_kept(self):
        options = server_options(TLSSettings(certificate=self.pki.path("chained.pem"),
                                             private_key=self.pki.path("chained-key.pem")))
        self.assertEqual(len(options.extraCertChain), 1)

    def test_client_factory_builds_per_name(self):
        factory = client_options_factory(TLSSettings(ca_file=self.pki.path("ca.pem")))
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(factory(SIP_NAME)))
        self.assertIs(factory(SIP_NAME), factory(SIP_NAME))  # one context per name, reused
        self.assertIsNot(factory("127.0.0.1"), factory(SIP_NAME))

    def test_client_certificate_with_chain(self):
        factory = client_options_factory(TLSSettings(ca_file=self.pki.path("ca.pem"),
                                                     certificate=self.pki.path("chained.pem"),
                                                     private_key=self.pki.path("chained-key.pem")))
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(factory(SIP_NAME)))

    def test_unverified_factory(self):
        factory = client_options_factory(TLSSettings(verify_server=False))
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(factory(SIP_NAME)))


class KamailioTLSRegistrarTests(TestCase):
    """Accounts registering over TLS with a real Kamailio registrar (its tls module): what
    an operator reads when its certificate is not trusted or names another host."""

    timeout = 60
    ACCOUNTS = 3

    def setUp(self):
        self.pki = make_pki(os.path.abspath(self.mktemp()))
        self.log_events: list[dict] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

    @defer.inlineCallbacks
    def start(self, certificate: str, key: str):
        registrar = KamailioRegistrar(self, tls=(self.pki.path(certificate), self.pki.path(key)))
        rows = [{
            "l_uuid": f"tls{n}", "l_username": f"tls{n}", "l_domain": "local.example", "r_username": f"tls{n}",
            "r_domain": SIP_NAME, "realm": registrar.realm, "auth_username": f"tls{n}",
            "auth_password": registrar.password_for(f"tls{n}"), "auth_ha1": "",
            # A numeric outbound proxy: no resolution, the certificate is checked against r_domain.
            "auth_proxy": f"sip:127.0.0.1:{registrar.tls_port};transport=tls", "expires": 600, "flags": 0,
            "reg_delay": 0, "contact_addr": "", "socket": "", "contact_user": "",
        } for n in range(self.ACCOUNTS)]
        path = yield sqlite_uacreg(self, rows)
        port = free_port()
        self.uac = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{port}"], "timer_t1": 200},
            "tls": {"ca_file": self.pki.path("ca.pem")},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{port}",
                    "reg_retry_interval": 60},
        })
        return registrar

    @defer.inlineCallbacks
    def last_errors(self) -> list[str]:
        """Every account's last_error (uac.reg_info's), once each has one."""
        registrant = self.uac.registrant
        deadline = reactor.seconds() + 30
        while (len(registrant.records) < self.ACCOUNTS
               or any(r.last_failure is None for r in registrant.records.values())):
            if reactor.seconds() > deadline:
                raise AssertionError(f"no failure for every account: {registrant.counters()}")
            yield task.deferLater(reactor, 0.1, lambda: None)
        return [registrant.records[f"tls{n}"].last_failure for n in range(self.ACCOUNTS)]

    def tls_warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.log_events
                if e["log_level"] == LogLevel.warn and "TLS connection to" in formatEvent(e)]

    def assertWarnedPerPeer(self, expected: str) -> None:
        """The warning names the peer and the verdict, once per peer per 10 s window (a busy
        machine may see the accounts' retries in a second window), never once per account."""
        warnings = self.tls_warnings()
        self.assertEqual(set(warnings), {expected})
        self.assertLessEqual(len(warnings), 2, warnings)

    @defer.inlineCallbacks
    def test_trusted_registrar(self):
        yield self.start("server.pem", "server-key.pem")
        yield wait_online(self.uac, self.ACCOUNTS, 30)

    @defer.inlineCallbacks
    def test_unknown_ca(self):
        registrar = yield self.start("rogue.pem", "rogue-key.pem")
        errors = yield self.last_errors()
        expected = (f"TLS connection to tls:127.0.0.1:{registrar.tls_port} failed: certificate verify failed: "
                    f"unable to get local issuer certificate (verifying {SIP_NAME})")
        self.assertEqual(errors, [expected] * self.ACCOUNTS)
        self.assertWarnedPerPeer(expected)
        self.assertIn("unknown ca", registrar.log())

    @defer.inlineCallbacks
    def test_certificate_for_another_name(self):
        registrar = yield self.start("other.pem", "other-key.pem")
        errors = yield self.last_errors()
        expected = (f"TLS connection to tls:127.0.0.1:{registrar.tls_port} failed: the certificate does not "
                    f"name {SIP_NAME} (DNSMismatch)")
        self.assertEqual(errors, [expected] * self.ACCOUNTS)
        self.assertWarnedPerPeer(expected)
