"""Client Digest (txuac.sip.digest): published vectors, a second implementation, parsing, selection.

The published vectors are the worked examples of RFC 2617 3.5 and RFC 7616
3.9.1 and 3.9.2, values as printed there (3.9.2 see below). Everything else
is checked against ``ref_response``, the second implementation of
tests/support/digest_reference.py (RFC 2617 3.2.2 and RFC 7616 3.4 with
hashlib only). tests/test_auth.py uses the same reference (``ref_verify``)
as the verifying server of its end-to-end tests.
"""

from __future__ import annotations

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from tests.support.digest_reference import ref_hash, ref_parse, ref_response, ref_userhash
from txuac.errors import AuthenticationError
from txuac.sip import AuthParams, Response
from txuac.sip.digest import (
    ALL_ALGORITHMS,
    Challenge,
    Credentials,
    NonceCounter,
    authorization,
    challenge_from,
    choose_challenge,
    parse_challenges,
)

# ---------------------------------------------------------------------------------------------
# Helpers for the tests below
# ---------------------------------------------------------------------------------------------


def challenge_response(*values: str, status: int = 401) -> Response:
    response = Response(status)
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    for value in values:
        response.headers.add(name, value)
    return response


def one_challenge(value: str, status: int = 401) -> Challenge:
    challenges = parse_challenges(challenge_response(value, status=status))
    assert len(challenges) == 1, challenges
    return challenges[0]


def params_of(header: str) -> dict[str, str]:
    scheme, params, _ = ref_parse(header)
    assert scheme == "Digest", header
    return params


PASSWORD = "pw-Zebra-9137"  # distinctive: searched for in every text that must not show it
MD5_HA1 = hashlib.md5(f"alice:example.org:{PASSWORD}".encode()).hexdigest()
SHA256_HA1 = hashlib.sha256(f"alice:example.org:{PASSWORD}".encode()).hexdigest()
SESS_ALGORITHMS = ("MD5-sess", "SHA-256-sess", "SHA-512-256-sess")


# ---------------------------------------------------------------------------------------------
# Published vectors
# ---------------------------------------------------------------------------------------------


class PublishedVectorTests(SynchronousTestCase):
    """Worked examples of the RFCs, values as printed."""

    def test_rfc2617_section_3_5(self):
        """RFC 2617 3.5: Mufasa / "Circle Of Life", MD5, qop offered "auth,auth-int", auth used."""
        challenge = one_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                                  'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                                  'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
        header = authorization(challenge, Credentials("Mufasa", "Circle Of Life"), "GET", "/dir/index.html",
                               nc=1, cnonce="0a4f113b")
        params = params_of(header)
        self.assertEqual(params["response"], "6629fae49393a05397450978507c4ef1")
        expected = {
            "username": "Mufasa",
            "realm": "testrealm@host.com",
            "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "uri": "/dir/index.html",
            "qop": "auth",
            "nc": "00000001",
            "cnonce": "0a4f113b",
            "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
        }
        self.assertEqual({k: params[k] for k in expected}, expected)

    RFC7616_CHALLENGE = ('Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={}, '
                         'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                         'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"

    def rfc7616_3_9_1(self, challenge: Challenge) -> dict[str, str]:
        # Erratum 4495 (verified): the password of 3.9.1 is "Circle of Life", lower-case "of".
        header = authorization(challenge, Credentials("Mufasa", "Circle of Life"), "GET", "/dir/index.html",
                               nc=1, cnonce=self.RFC7616_CNONCE)
        params = params_of(header)
        for name, value in (("username", "Mufasa"), ("realm", "http-auth@example.org"), ("uri", "/dir/index.html"),
                            ("nonce", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"), ("nc", "00000001"),
                            ("cnonce", self.RFC7616_CNONCE), ("qop", "auth"),
                            ("opaque", "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")):
            self.assertEqual(params[name], value, name)
        return params

    def test_rfc7616_section_3_9_1_md5_and_sha256(self):
        """RFC 7616 3.9.1: the server sends SHA-256 first and MD5 second; both answers as printed."""
        response = challenge_response(self.RFC7616_CHALLENGE.format("SHA-256"), self.RFC7616_CHALLENGE.format("MD5"))
        sha256, md5 = parse_challenges(response)
        self.assertEqual((sha256.algorithm, md5.algorithm), ("SHA-256", "MD5"))
        self.assertEqual(sha256.qop, ("auth", "auth-int"))
        params = self.rfc7616_3_9_1(md5)
        self.assertEqual((params["algorithm"], params["response"]), ("MD5", "8ca523f5e9506fed4657c9700eebdbec"))
        params = self.rfc7616_3_9_1(sha256)
        self.assertEqual((params["algorithm"], params["response"]),
                         ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"))

    # RFC 7616 3.9.2 as printed. Erratum 4897 (reported): these were computed with
    # SHA-512 truncated to 256 bits (the initial values of SHA-512), not with
    # SHA-512/256 of FIPS 180-4 6.7 which 3.2 names; the erratum gives the
    # FIPS values. test_rfc7616_3_9_2_printed_values_are_truncated_sha512 proves it.
    RFC7616_3_9_2_PRINTED_USERNAME = "488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec"
    RFC7616_3_9_2_PRINTED_RESPONSE = "ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd"
    RFC7616_3_9_2_FIPS_USERNAME = "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
    RFC7616_3_9_2_FIPS_RESPONSE = "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"
    RFC7616_3_9_2 = dict(username="J\u00e4s\u00f8n Doe", realm="api@example.org", password="Secret, or not?",
                         nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK",
                         cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v")

    def test_rfc7616_section_3_9_2_sha512_256_userhash(self):
        """RFC 7616 3.9.2: SHA-512-256, UTF-8 user name "Jäsøn Doe", userhash=true.

        txuac uses FIPS SHA-512/256 (hashlib "sha512_256"), so it gives the
        values of erratum 4897, not the printed ones (see the next test)."""
        v = self.RFC7616_3_9_2
        self.assertEqual(v["username"].encode("utf-8").hex(), "4ac3a473c3b86e20446f65")  # the octets printed in 3.9.2
        challenge = one_challenge(f'Digest realm="{v["realm"]}", qop="auth", algorithm=SHA-512-256, '
                                  f'nonce="{v["nonce"]}", opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", '
                                  'charset=UTF-8, userhash=true')
        self.assertTrue(challenge.userhash)
        header = authorization(challenge, Credentials(v["username"], v["password"]), "GET", "/doe.json",
                               nc=1, cnonce=v["cnonce"])
        params = params_of(header)
        self.assertEqual(params["username"], self.RFC7616_3_9_2_FIPS_USERNAME)
        self.assertEqual(params["response"], self.RFC7616_3_9_2_FIPS_RESPONSE)
        self.assertEqual((params["algorithm"], params["userhash"], params["qop"], params["nc"]),
                         ("SHA-512-256", "true", "auth", "00000001"))
        self.assertNotIn("J\u00e4s\u00f8n", header)  # the real name never goes on the wire with userhash

    def test_rfc7616_3_9_2_printed_values_are_truncated_sha512(self):
        """The printed 3.9.2 values are reproduced exactly by the reference with SHA-512
        truncated to 64 hex digits, and by the FIPS hash with erratum 4897's values."""
        v = self.RFC7616_3_9_2

        def truncated(data: str) -> str:
            return hashlib.sha512(data.encode("utf-8")).hexdigest()[:64]

        a1 = truncated(f"{v['username']}:{v['realm']}:{v['password']}")
        printed = truncated(f"{a1}:{v['nonce']}:00000001:{v['cnonce']}:auth:{truncated('GET:/doe.json')}")
        self.assertEqual(truncated(f"{v['username']}:{v['realm']}"), self.RFC7616_3_9_2_PRINTED_USERNAME)
        self.assertEqual(printed, self.RFC7616_3_9_2_PRINTED_RESPONSE)
        self.assertEqual(ref_userhash("SHA-512-256", v["username"], v["realm"]), self.RFC7616_3_9_2_FIPS_USERNAME)
        self.assertEqual(ref_response(algorithm="SHA-512-256", username=v["username"], realm=v["realm"],
                                      password=v["password"], nonce=v["nonce"], method="GET", uri="/doe.json",
                                      qop="auth", cnonce=v["cnonce"]), self.RFC7616_3_9_2_FIPS_RESPONSE)

    def test_reference_reproduces_the_vectors(self):
        """The second implementation agrees with the printed RFC 2617 and RFC 7616 3.9.1 values."""
        self.assertEqual(ref_response(username="Mufasa", realm="testrealm@host.com", password="Circle Of Life",
                                      nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", method="GET",
                                      uri="/dir/index.html", qop="auth", cnonce="0a4f113b"),
                         "6629fae49393a05397450978507c4ef1")
        for algorithm, expected in (("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
                                    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")):
            self.assertEqual(ref_response(algorithm=algorithm, username="Mufasa", realm="http-auth@example.org",
                                          password="Circle of Life",
                                          nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                                          method="GET", uri="/dir/index.html", qop="auth",
                                          cnonce=self.RFC7616_CNONCE), expected)


# ---------------------------------------------------------------------------------------------
# Against the second implementation
# ---------------------------------------------------------------------------------------------


class ReferenceTests(SynchronousTestCase):
    """txuac's answers, recomputed by ``ref_response`` from the header txuac wrote."""

    realm = "example.org"
    nonce = "b5ae6a1c8d9e4f0a"
    method = "MESSAGE"
    uri = "sip:bob@example.org;transport=udp"

    def challenge(self, algorithm: str | None = "MD5", qop: str | None = "auth", extra: str = "") -> Challenge:
        value = f'Digest realm="{self.realm}", nonce="{self.nonce}"'
        if algorithm is not None:
            value += f", algorithm={algorithm}"
        if qop is not None:
            value += f', qop="{qop}"'
        return one_challenge(value + extra)

    def check(self, challenge: Challenge, credentials: Credentials, *, body: bytes = b"", prefer_auth_int=False,
              nc: int = 1, password: str | None = PASSWORD, ha1: str | None = None) -> dict[str, str]:
        header = authorization(challenge, credentials, self.method, self.uri, body, prefer_auth_int=prefer_auth_int,
                               nc=nc, cnonce="0a4f113b")
        params = params_of(header)
        expected = ref_response(algorithm=challenge.algorithm_token, username=credentials.username, realm=self.realm,
                                password=password, ha1=ha1, nonce=self.nonce, method=self.method, uri=self.uri,
                                qop=params.get("qop"), nc=params.get("nc", ""), cnonce=params.get("cnonce", ""),
                                body=body)
        self.assertEqual(params["response"], expected, header)
        return params

    def test_every_algorithm_and_qop(self):
        for algorithm in ALL_ALGORITHMS:
            for qop in (None, "auth", "auth-int"):
                for body in (b"", b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"):
                    with self.subTest(algorithm=algorithm, qop=qop, body=body):
                        params = self.check(self.challenge(algorithm, qop), Credentials("alice", PASSWORD), body=body)
                        self.assertEqual(params.get("qop"), qop)
                        self.assertEqual(params["algorithm"], algorithm)

    def test_auth_int_hashes_the_body(self):
        """auth-int with a body: the answer depends on the body, and an empty body is hashed too."""
        challenge = self.challenge("MD5", "auth-int")
        credentials = Credentials("alice", PASSWORD)
        with_body = self.check(challenge, credentials, body=b"hello")
        empty = self.check(challenge, credentials, body=b"")
        self.assertEqual((with_body["qop"], empty["qop"]), ("auth-int", "auth-int"))
        self.assertNotEqual(with_body["response"], empty["response"])
        # The empty body is H("") in A2, not a missing third part.
        no_entity = ref_hash("MD5", f"{MD5_HA1}:{self.nonce}:00000001:0a4f113b:auth-int:"
                                    f"{ref_hash('MD5', f'{self.method}:{self.uri}')}")
        self.assertNotEqual(empty["response"], no_entity)
        self.assertEqual(ref_hash("MD5", b""), "d41d8cd98f00b204e9800998ecf8427e")

    def test_auth_int_with_sha256_and_a_body(self):
        params = self.check(self.challenge("SHA-256", "auth-int"), Credentials("alice", PASSWORD), body=b"x" * 1024)
        self.assertEqual((params["qop"], len(params["response"])), ("auth-int", 64))

    def test_sess_variants(self):
        """MD5-sess, SHA-256-sess, SHA-512-256-sess (RFC 7616 3.4.2: the hex inner HA1)."""
        for algorithm in SESS_ALGORITHMS:
            for qop in ("auth", "auth-int"):
                with self.subTest(algorithm=algorithm, qop=qop):
                    params = self.check(self.challenge(algorithm, qop), Credentials("alice", PASSWORD), body=b"b")
                    self.assertEqual((params["algorithm"], params["cnonce"]), (algorithm, "0a4f113b"))

    def test_sess_depends_on_the_cnonce(self):
        challenge = self.challenge("MD5-sess", "auth")
        first = params_of(authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", "sip:x", cnonce="a"))
        second = params_of(authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", "sip:x", cnonce="b"))
        self.assertNotEqual(first["response"], second["response"])

    def test_sess_without_qop_sends_its_cnonce(self):
        """A -sess challenge without qop: the cnonce is in A1, so it must be in the header."""
        params = self.check(self.challenge("MD5-sess", None), Credentials("alice", PASSWORD))
        self.assertEqual(params["cnonce"], "0a4f113b")
        self.assertNotIn("qop", params)
        self.assertNotIn("nc", params)

    def test_rfc2069_without_qop(self):
        for algorithm in (None, "MD5", "SHA-256"):
            with self.subTest(algorithm=algorithm):
                challenge = self.challenge(algorithm, None)
                header = authorization(challenge, Credentials("alice", PASSWORD), self.method, self.uri,
                                       cnonce="0a4f113b")
                params = params_of(header)
                for absent in ("qop", "nc", "cnonce"):
                    self.assertNotIn(absent, params)
                self.assertEqual(params["response"], ref_response(
                    algorithm=algorithm or "MD5", username="alice", realm=self.realm, password=PASSWORD,
                    nonce=self.nonce, method=self.method, uri=self.uri))

    def test_absent_algorithm_is_md5(self):
        challenge = self.challenge(None, "auth")
        self.assertEqual(challenge.algorithm, "MD5")
        self.assertEqual(self.check(challenge, Credentials("alice", PASSWORD))["algorithm"], "MD5")

    def test_ha1_mode_md5(self):
        challenge = self.challenge("MD5", "auth")
        by_password = self.check(challenge, Credentials("alice", PASSWORD))
        by_ha1 = self.check(challenge, Credentials("alice", ha1=MD5_HA1), password=None, ha1=MD5_HA1)
        self.assertEqual(by_password["response"], by_ha1["response"])

    def test_ha1_mode_sha256_64_hex(self):
        for algorithm in ("SHA-256", "SHA-256-sess"):
            with self.subTest(algorithm=algorithm):
                challenge = self.challenge(algorithm, "auth-int")
                by_password = self.check(challenge, Credentials("alice", PASSWORD), body=b"x")
                by_ha1 = self.check(challenge, Credentials("alice", ha1=SHA256_HA1), body=b"x", password=None,
                                    ha1=SHA256_HA1)
                self.assertEqual(by_password["response"], by_ha1["response"])

    def test_ha1_mode_sess(self):
        challenge = self.challenge("MD5-sess", "auth")
        self.assertEqual(self.check(challenge, Credentials("alice", PASSWORD))["response"],
                         self.check(challenge, Credentials("alice", ha1=MD5_HA1), password=None,
                                    ha1=MD5_HA1)["response"])

    def test_uppercase_ha1_is_accepted(self):
        """Kamailio used a plain-MD5 HA1 verbatim (upper case failed); any case works here."""
        challenge = self.challenge("MD5", "auth")
        lower = self.check(challenge, Credentials("alice", ha1=MD5_HA1), password=None, ha1=MD5_HA1)
        upper = self.check(challenge, Credentials("alice", ha1=MD5_HA1.upper()), password=None, ha1=MD5_HA1)
        self.assertEqual(lower["response"], upper["response"])
        self.assertEqual(lower["response"], self.check(challenge, Credentials("alice", PASSWORD))["response"])

    def test_userhash(self):
        for algorithm in ("MD5", "SHA-256", "SHA-512-256"):
            with self.subTest(algorithm=algorithm):
                challenge = self.challenge(algorithm, "auth", extra=", userhash=true")
                params = self.check(challenge, Credentials("alice", PASSWORD))
                self.assertEqual(params["username"], ref_userhash(algorithm, "alice", self.realm))
                self.assertEqual(params["userhash"], "true")

    def test_no_userhash_without_the_offer(self):
        params = self.check(self.challenge("SHA-256", "auth"), Credentials("alice", PASSWORD))
        self.assertEqual(params["username"], "alice")
        self.assertNotIn("userhash", params)

    def test_nc_beyond_one(self):
        challenge = self.challenge("MD5", "auth")
        for nc, text in ((2, "00000002"), (10, "0000000a"), (255, "000000ff"), (0x1234abcd, "1234abcd")):
            with self.subTest(nc=nc):
                params = self.check(challenge, Credentials("alice", PASSWORD), nc=nc)
                self.assertEqual(params["nc"], text)

    def test_header_states_the_qop_used(self):
        """Kamailio wrote qop=auth while hashing auth-int (reference 2.7); here the header
        names exactly the qop of the hash, and it is one the server offered."""
        credentials = Credentials("alice", PASSWORD)
        cases = [
            ("auth-int", False, "auth-int"),
            ("auth-int", True, "auth-int"),
            ("auth,auth-int", False, "auth"),
            ("auth-int,auth", False, "auth"),
            ("auth,auth-int", True, "auth-int"),
            ("auth-int,auth", True, "auth-int"),
            ("auth", True, "auth"),
            ("auth, auth-int", True, "auth-int"),
        ]
        for offered, prefer, expected in cases:
            with self.subTest(offered=offered, prefer=prefer):
                params = self.check(self.challenge("MD5", offered), credentials, body=b"body", prefer_auth_int=prefer)
                self.assertEqual(params["qop"], expected)
                # What Kamailio did (qop=auth in the header, auth-int hashed) is refused.
                if expected == "auth-int":
                    kamailio = ref_response(username="alice", realm=self.realm, password=PASSWORD, nonce=self.nonce,
                                            method=self.method, uri=self.uri, qop="auth", cnonce="0a4f113b",
                                            body=b"body")
                    self.assertNotEqual(params["response"], kamailio)

    def test_unknown_qop_only(self):
        challenge = self.challenge("MD5", "auth-conf")
        self.assertFalse(challenge.supported)
        self.assertRaises(AuthenticationError, authorization, challenge, Credentials("alice", PASSWORD), "X", "sip:x")

    def test_opaque_echoed_and_algorithm_token_as_written(self):
        challenge = self.challenge("md5-sess", "auth", extra=', opaque="op\\"aque"')
        self.assertEqual(challenge.algorithm, "MD5-SESS")
        header = authorization(challenge, Credentials("alice", PASSWORD), self.method, self.uri, cnonce="c")
        params = params_of(header)
        self.assertEqual(params["opaque"], 'op"aque')
        self.assertIn("algorithm=md5-sess", header)  # RFC 7616 3.4: the value the server sent

    def test_header_shape(self):
        """Quoted: username, realm, nonce, uri, response, cnonce, opaque; unquoted: algorithm, qop, nc."""
        challenge = self.challenge("SHA-256", "auth", extra=', opaque="xyz"')
        header = authorization(challenge, Credentials("alice", PASSWORD), self.method, self.uri, cnonce="c0ffee")
        self.assertTrue(header.startswith("Digest "), header)
        self.assertNotIn("\r", header)
        self.assertNotIn("\n", header)
        _, params, quoted = ref_parse(header)
        self.assertEqual(quoted, {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"})
        self.assertEqual((params["algorithm"], params["qop"], params["nc"]), ("SHA-256", "auth", "00000001"))

    def test_escapes_round_trip(self):
        """A realm and nonce with quotes and backslashes: the hash uses the unescaped text and
        the header escapes it again."""
        realm, nonce = 'we\\ird "realm"', 'n"o\\nce'
        challenge = one_challenge('Digest realm="we\\\\ird \\"realm\\"", nonce="n\\"o\\\\nce", qop=auth')
        self.assertEqual((challenge.realm, challenge.nonce), (realm, nonce))
        params = params_of(authorization(challenge, Credentials("alice", PASSWORD), "OPTIONS", "sip:x", cnonce="c"))
        self.assertEqual((params["realm"], params["nonce"]), (realm, nonce))
        self.assertEqual(params["response"], ref_response(username="alice", realm=realm, password=PASSWORD,
                                                          nonce=nonce, method="OPTIONS", uri="sip:x", qop="auth",
                                                          cnonce="c"))

    def test_random_cnonce(self):
        challenge = self.challenge("MD5", "auth")
        cnonces = {params_of(authorization(challenge, Credentials("alice", PASSWORD), "X", "sip:x"))["cnonce"]
                   for _ in range(20)}
        self.assertEqual(len(cnonces), 20)
        self.assertTrue(all(len(c) >= 16 for c in cnonces))


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


class ParseTests(SynchronousTestCase):

    def test_several_challenges_in_one_header(self):
        challenges = parse_challenges(challenge_response(
            'Digest realm="a", nonce="1", algorithm=SHA-256, qop="auth", Digest realm="a", nonce="2", algorithm=MD5'))
        self.assertEqual([(c.nonce, c.algorithm, c.qop) for c in challenges],
                         [("1", "SHA-256", ("auth",)), ("2", "MD5", ())])

    def test_several_headers_in_order(self):
        challenges = parse_challenges(challenge_response('Digest realm="a", nonce="1"', 'Digest realm="b", nonce="2"',
                                                         status=407))
        self.assertEqual([(c.realm, c.proxy, c.header_name) for c in challenges],
                         [("a", True, "Proxy-Authorization"), ("b", True, "Proxy-Authorization")])

    def test_401_reads_only_www_authenticate(self):
        response = Response(401)
        response.headers.add("Proxy-Authenticate", 'Digest realm="proxy", nonce="p"')
        response.headers.add("WWW-Authenticate", 'Digest realm="uas", nonce="u"')
        self.assertEqual([(c.realm, c.proxy, c.header_name) for c in parse_challenges(response)],
                         [("uas", False, "Authorization")])

    def test_quoted_string_escapes(self):
        challenge = one_challenge(r'Digest realm="a\"b\\c, d", nonce="n\"1", opaque="o\\p"')
        self.assertEqual((challenge.realm, challenge.nonce, challenge.opaque), ('a"b\\c, d', 'n"1', "o\\p"))

    def test_unquoted_tokens(self):
        challenge = one_challenge("Digest realm=example.org, nonce=abc123, qop=auth, algorithm=SHA-256, stale=true")
        self.assertEqual((challenge.realm, challenge.nonce, challenge.qop, challenge.algorithm, challenge.stale),
                         ("example.org", "abc123", ("auth",), "SHA-256", True))

    def test_case_insensitive_names_and_algorithms(self):
        challenge = one_challenge('DIGEST REALM="a", Nonce="n", ALGORITHM=md5-sess, QOP="Auth-Int, AUTH"')
        self.assertEqual((challenge.realm, challenge.nonce), ("a", "n"))
        self.assertEqual((challenge.algorithm, challenge.algorithm_token), ("MD5-SESS", "md5-sess"))
        self.assertEqual(challenge.qop, ("auth-int", "auth"))
        self.assertTrue(challenge.supported)
        for token, canonical in (("sha-256", "SHA-256"), ("Sha-512-256-Sess", "SHA-512-256-SESS"),
                                 ('"SHA-256"', "SHA-256"), ("md5", "MD5")):
            with self.subTest(token=token):
                self.assertEqual(one_challenge(f'digest realm="a", nonce="n", algorithm={token}').algorithm, canonical)

    def test_algorithm_and_flags_read_in_ascii(self):
        """str.upper() makes "SHA-256" of "\u017fha-256" and "MD5-SESS" of "md5-\u017fess"; the
        server named no algorithm we know. Whitespace is SP and HTAB only (RFC 3261 25.1)."""
        for token in ("\u017fha-256", '"md5-\u017fess"', '"SHA-256\u00a0"', '"\u3000MD5"'):
            with self.subTest(token=token):
                challenge = one_challenge(f'Digest realm="a", nonce="n", algorithm={token}')
                self.assertNotIn(challenge.algorithm, ALL_ALGORITHMS)
                self.assertFalse(challenge.supported)
        challenge = one_challenge('Digest realm="a", nonce="n", qop="auth\u00a0", stale="true\u00a0"')
        self.assertEqual((challenge.qop, challenge.stale, challenge.supported), (("auth\u00a0",), False, False))
        challenge = one_challenge('Digest realm="a", nonce="n", algorithm=" sha-256\t", qop=" auth ", stale="TRUE "')
        self.assertEqual((challenge.algorithm, challenge.qop, challenge.stale), ("SHA-256", ("auth",), True))

    def test_a_repeated_parameter_counts_once_its_first_value(self):
        challenge = one_challenge('Digest realm="a", Realm="b", nonce="n1", NONCE="n2", opaque="o1", opaque="o2"')
        self.assertEqual((challenge.realm, challenge.nonce, challenge.opaque), ("a", "n1", "o1"))

    def test_unknown_parameters_ignored(self):
        challenge = one_challenge('Digest realm="a", foo=bar, nonce="n", domain="sip:a sip:b", baz="x, y=z", '
                                  'charset=UTF-8')
        self.assertEqual((challenge.realm, challenge.nonce), ("a", "n"))

    def test_non_digest_schemes_skipped(self):
        cases = [
            ('Basic realm="x", Digest realm="a", nonce="n"',),
            ("Bearer mF_9.B5f-4.1JqM", 'Digest realm="a", nonce="n"'),
            ('Bearer abc.def-ghi==, Digest realm="a", nonce="n"',),
            ('Digest realm="a", nonce="n", Basic realm="x"',),
            ('Negotiate', 'Basic realm="x"', 'Digest realm="a", nonce="n"'),
        ]
        for values in cases:
            with self.subTest(values=values):
                challenges = parse_challenges(challenge_response(*values))
                self.assertEqual([(c.realm, c.nonce) for c in challenges], [("a", "n")])

    def test_only_non_digest_is_an_authentication_error(self):
        for values in (('Basic realm="x"',), ("Bearer abc.def==",), ('Basic realm="x"', "Bearer t0k3n")):
            with self.subTest(values=values):
                e = self.assertRaises(AuthenticationError, parse_challenges, challenge_response(*values))
                self.assertIn("no Digest challenge", str(e))

    def test_no_header_at_all(self):
        e = self.assertRaises(AuthenticationError, parse_challenges, Response(407))
        self.assertIn("Proxy-Authenticate", str(e))

    def test_the_error_carries_the_response(self):
        response = challenge_response('Basic realm="x"')
        e = self.assertRaises(AuthenticationError, parse_challenges, response)
        self.assertIs(e.response, response)

    def test_malformed_challenges_name_the_reason(self):
        cases = [
            ('Digest realm="a"', "nonce"),
            ('Digest nonce="n"', "realm"),
            ('Digest qop="auth"', "realm"),
            ("Digest", "realm"),
            ('Digest realm="a, nonce="n"', "quoted"),
            ('Digest realm="a", nonce="n', "quoted"),
            ('Digest realm="a" nonce="n"', "auth-param"),
            ('Digest realm=, nonce="n"', "auth-param"),
            ("", "auth scheme"),
        ]
        for value, reason in cases:
            with self.subTest(value=value):
                e = self.assertRaises(AuthenticationError, parse_challenges, challenge_response(value))
                self.assertIn(reason, str(e))
                self.assertIn("401", str(e))

    def test_malformed_beside_a_good_challenge(self):
        """A broken challenge does not spoil a usable one in another header."""
        challenges = parse_challenges(challenge_response('Digest realm="a, nonce="n"', 'Digest realm="b"',
                                                         'Digest realm="c", nonce="ok"'))
        self.assertEqual([c.realm for c in challenges], ["c"])

    def test_challenge_from_auth_params(self):
        challenge = challenge_from(AuthParams("Digest", [("realm", '"r"'), ("nonce", "n"), ("qop", '"auth"')]),
                                   proxy=True)
        self.assertEqual((challenge.realm, challenge.nonce, challenge.qop, challenge.proxy),
                         ("r", "n", ("auth",), True))
        e = self.assertRaises(AuthenticationError, challenge_from, AuthParams("Digest", [("realm", '"r"')]), False)
        self.assertIn("nonce", str(e))

    def test_stale(self):
        for text, stale in (("stale=true", True), ("stale=TRUE", True), ('stale="true"', True), ("stale=True", True),
                            ("stale=false", False), ("stale=FALSE", False), ("stale=yes", False), ("", False)):
            with self.subTest(text=text):
                extra = f", {text}" if text else ""
                self.assertEqual(one_challenge(f'Digest realm="a", nonce="n"{extra}').stale, stale)

    def test_userhash_flag(self):
        for text, userhash in (("userhash=true", True), ('userhash="TRUE"', True), ("userhash=false", False),
                               ("", False)):
            with self.subTest(text=text):
                extra = f", {text}" if text else ""
                self.assertEqual(one_challenge(f'Digest realm="a", nonce="n"{extra}').userhash, userhash)

    def test_never_another_exception(self):
        """Odd inputs give challenges or AuthenticationError, nothing else."""
        odd = ['Digest ,,,', ",", 'Digest realm="a",,nonce="n"', 'Digest realm="a", nonce="n", qop=',
               'Digest realm="a", nonce="n", algorithm=', '"Digest"', 'Digest realm="\u00e4", nonce="\u00f8"',
               "Digest realm=a=b, nonce=n", 'Digest realm="a"; nonce="n"', "Digest <sip:x>", 'Digest realm="a\\',
               "Basic ====", 'Digest realm="a", nonce="n", stale', "Digest =x", "Digest realm==a, nonce=n"]
        for value in odd:
            with self.subTest(value=value):
                try:
                    parse_challenges(challenge_response(value))
                except AuthenticationError:
                    pass


# ---------------------------------------------------------------------------------------------
# Selection and credentials (reference 9.3)
# ---------------------------------------------------------------------------------------------


def chal(algorithm: str | None = "MD5", realm: str = "example.org", qop: str | None = "auth", nonce: str = "n") -> str:
    value = f'Digest realm="{realm}", nonce="{nonce}"'
    if algorithm:
        value += f", algorithm={algorithm}"
    if qop:
        value += f', qop="{qop}"'
    return value


def anyone(credentials: Credentials):
    return lambda challenge: credentials


class SelectionTests(SynchronousTestCase):

    def choose(self, *values: str, credentials: Credentials | None = None, allowed=ALL_ALGORITHMS, status=407):
        challenges = parse_challenges(challenge_response(*values, status=status))
        creds = credentials or Credentials("alice", PASSWORD)
        return choose_challenge(challenges, anyone(creds), allowed)

    def test_sha256_first_md5_second(self):
        challenge, _ = self.choose(chal("SHA-256"), chal("MD5"))
        self.assertEqual((challenge.algorithm, challenge.proxy), ("SHA-256", True))

    def test_strongest_not_first(self):
        """Kamailio <= 6.1.2 used the first header; master and txuac the strongest (reference 2.3)."""
        challenge, _ = self.choose(chal("MD5"), chal("SHA-256"))
        self.assertEqual(challenge.algorithm, "SHA-256")
        challenge, _ = self.choose(chal("MD5"), chal("MD5-sess"), chal("SHA-256-sess"), chal("SHA-512-256"))
        self.assertEqual(challenge.algorithm, "SHA-512-256")

    def test_ties_keep_the_server_order(self):
        challenge, _ = self.choose(chal("MD5", nonce="first"), chal("MD5", nonce="second"))
        self.assertEqual(challenge.nonce, "first")

    def test_allow_list(self):
        challenge, _ = self.choose(chal("SHA-256"), chal("MD5"), allowed=("MD5",))
        self.assertEqual(challenge.algorithm, "MD5")
        challenge, _ = self.choose(chal("SHA-256"), chal("MD5"), allowed=("md5", "sha-256"))
        self.assertEqual(challenge.algorithm, "SHA-256")
        e = self.assertRaises(AuthenticationError, self.choose, chal("SHA-256"), allowed=("MD5",))
        self.assertIn("SHA-256 not allowed", str(e))

    def test_unsupported_algorithms_skipped(self):
        challenge, _ = self.choose(chal("AKAv1-MD5"), chal("SHA-1"), chal("MD5"), chal("SHA-512"))
        self.assertEqual(challenge.algorithm, "MD5")
        e = self.assertRaises(AuthenticationError, self.choose, chal("AKAv1-MD5"), chal("SHA-1"))
        self.assertIn("AKAv1-MD5", str(e))
        self.assertIn("SHA-1", str(e))

    def test_unsupported_qop_skipped(self):
        challenge, _ = self.choose(chal("SHA-256", qop="auth-conf"), chal("MD5"))
        self.assertEqual(challenge.algorithm, "MD5")

    def test_qop_auth_int_comma_auth(self):
        challenge, credentials = self.choose(chal("MD5", qop="auth-int,auth"))
        self.assertEqual(challenge.qop, ("auth-int", "auth"))
        self.assertEqual(params_of(authorization(challenge, credentials, "INVITE", "sip:b@x"))["qop"], "auth")

    def test_credentials_for_one_realm_only(self):
        challenges = parse_challenges(challenge_response(chal("SHA-256", realm="other.net"), chal("MD5", realm="mine")))
        known = Credentials("alice", PASSWORD, realm="mine")
        challenge, credentials = choose_challenge(challenges, lambda c: known if c.realm == "mine" else None)
        self.assertEqual((challenge.realm, credentials), ("mine", known))
        e = self.assertRaises(AuthenticationError, choose_challenge, challenges[:1],
                              lambda c: known if c.realm == "mine" else None)
        self.assertIn("other.net", str(e))

    def test_realm_bound_credentials_do_not_fit_another_realm(self):
        credentials = Credentials("alice", PASSWORD, realm="mine")
        self.assertFalse(credentials.fits(one_challenge(chal("MD5", realm="yours"))))
        self.assertTrue(credentials.fits(one_challenge(chal("MD5", realm="mine"))))
        self.assertTrue(Credentials("alice", PASSWORD).fits(one_challenge(chal("MD5", realm="yours"))))
        self.assertRaises(AuthenticationError, authorization, one_challenge(chal("MD5", realm="yours")), credentials,
                          "REGISTER", "sip:x")

    def test_md5_ha1_with_sha256_and_md5_offered_picks_md5(self):
        challenge, _ = self.choose(chal("SHA-256"), chal("MD5"), credentials=Credentials("alice", ha1=MD5_HA1))
        self.assertEqual(challenge.algorithm, "MD5")
        challenge, _ = self.choose(chal("SHA-256"), chal("MD5-sess"), credentials=Credentials("alice", ha1=MD5_HA1))
        self.assertEqual(challenge.algorithm, "MD5-SESS")
        challenge, _ = self.choose(chal("MD5"), chal("SHA-256"), credentials=Credentials("alice", ha1=SHA256_HA1))
        self.assertEqual(challenge.algorithm, "SHA-256")

    def test_ha1_of_the_wrong_length_only_is_refused(self):
        e = self.assertRaises(AuthenticationError, self.choose, chal("SHA-256"), chal("SHA-512-256"),
                              credentials=Credentials("alice", ha1=MD5_HA1))
        self.assertIn("SHA-256", str(e))
        self.assertNotIn(MD5_HA1, str(e))
        self.assertRaises(AuthenticationError, self.choose, chal("MD5"),
                          credentials=Credentials("alice", ha1=SHA256_HA1))
        self.assertRaises(AuthenticationError, authorization, one_challenge(chal("SHA-256")),
                          Credentials("alice", ha1=MD5_HA1), "REGISTER", "sip:x")

    def test_ha1_of_the_wrong_length_error_says_so(self):
        """BUG: the error for an HA1 that does not fit says "no credentials for realm ...",
        though there are credentials: it should name the HA1/algorithm mismatch."""
        e = self.assertRaises(AuthenticationError, self.choose, chal("SHA-256"),
                              credentials=Credentials("alice", ha1=MD5_HA1))
        self.assertIn("HA1", str(e))

    def test_credentials_need_exactly_one_secret(self):
        for kwargs in ({}, {"password": PASSWORD, "ha1": MD5_HA1}):
            with self.subTest(kwargs=list(kwargs)):
                e = self.assertRaises(AuthenticationError, Credentials, "alice", **kwargs)
                self.assertIn("alice", str(e))
                self.assertNotIn(PASSWORD, str(e))
                self.assertNotIn(MD5_HA1, str(e))

    def test_bad_ha1(self):
        bad = [MD5_HA1[:-1], MD5_HA1 + "0", MD5_HA1[:-1] + "g", SHA256_HA1[:-1], "zz" * 16, "", " " + MD5_HA1[1:],
               MD5_HA1[:31] + "\u00e9", SHA256_HA1 + MD5_HA1]
        for ha1 in bad:
            with self.subTest(ha1=ha1):
                e = self.assertRaises(AuthenticationError, Credentials, "alice", ha1=ha1)
                self.assertIn("HA1", str(e))
                if ha1:
                    self.assertNotIn(ha1, str(e))

    def test_repr_and_str_hide_the_secret(self):
        for credentials in (Credentials("alice", PASSWORD), Credentials("alice", PASSWORD, realm="r"),
                            Credentials("alice", ha1=MD5_HA1), Credentials("alice", ha1=SHA256_HA1.upper())):
            with self.subTest(credentials=credentials):
                for text in (repr(credentials), str(credentials), f"{credentials}", f"{credentials!r}",
                             repr([credentials]), repr({"c": credentials})):
                    self.assertIn("alice", text)
                    for secret in (PASSWORD, MD5_HA1, SHA256_HA1, SHA256_HA1.upper()):
                        self.assertNotIn(secret, text)

    def test_no_secret_in_any_error(self):
        """Every AuthenticationError of the digest module, gathered, never shows a secret."""
        messages = []

        def error(call, *args, **kwargs):
            messages.append(str(self.assertRaises(AuthenticationError, call, *args, **kwargs)))

        password = Credentials("alice", PASSWORD, realm="mine")
        ha1 = Credentials("alice", ha1=MD5_HA1)
        error(Credentials, "alice", password=PASSWORD, ha1=MD5_HA1)
        error(Credentials, "alice", ha1=MD5_HA1[:-1])
        error(Credentials, "alice", ha1=SHA256_HA1 + "0")
        error(authorization, one_challenge(chal("MD5", realm="other")), password, "X", "sip:x")
        error(authorization, one_challenge(chal("SHA-256")), ha1, "X", "sip:x")
        error(authorization, one_challenge(chal("MD5", qop="auth-conf")), ha1, "X", "sip:x")
        error(authorization, one_challenge(chal("SHA-1")), ha1, "X", "sip:x")
        error(choose_challenge, [one_challenge(chal("SHA-256"))], anyone(ha1))
        error(choose_challenge, [one_challenge(chal("MD5", realm="other"))], anyone(password))
        error(choose_challenge, [one_challenge(chal("MD5"))], lambda c: None)
        self.assertEqual(len(messages), 10)
        for message in messages:
            for secret in (PASSWORD, MD5_HA1):
                self.assertNotIn(secret, message)


class NonceCounterTests(SynchronousTestCase):

    def test_counts_per_nonce(self):
        counter = NonceCounter()
        self.assertEqual([counter.next("a"), counter.next("a"), counter.next("a")], [1, 2, 3])
        self.assertEqual(counter.next("b"), 1)
        self.assertEqual(counter.next("a"), 4)

    def test_bounded_memory(self):
        counter = NonceCounter()
        for i in range(10_000):
            counter.next(f"nonce-{i}")
            self.assertLessEqual(len(counter.counts), counter.limit)
        self.assertEqual(counter.next("nonce-0"), 1)  # long forgotten: counts from 1 again
        self.assertEqual(counter.next("nonce-9999"), 2)  # still known

    def test_recently_used_nonces_are_kept(self):
        counter = NonceCounter(limit=3)
        counter.next("a")
        counter.next("b")
        counter.next("a")
        counter.next("c")
        counter.next("d")  # over the limit: b, the least recently used, goes
        self.assertEqual(set(counter.counts), {"a", "c", "d"})
        self.assertEqual(counter.next("a"), 3)
        self.assertEqual(counter.next("b"), 1)
