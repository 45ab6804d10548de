"""Digest answer throughput on one core: (Proxy-)Authorization values computed per second.

(a) MD5, qop=auth: the common registrar challenge;
(b) SHA-256, qop=auth-int, with a 1 KiB body hashed in every answer;
(c) for information: (a) plus reading the 401 (parse_challenges + choose_challenge).

Each answer gets a fresh random cnonce and the next nc, as a client sends
them. Target: (a) >= 50,000/s.

Usage: python bench/digest.py [seconds-per-case]
"""

from __future__ import annotations

import os
import sys

# An installed txuac (compiled by mypyc, see setup.py) wins over the checkout.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from measure import per_core  # noqa: E402
from txuac.sip import COMPILED, Response  # noqa: E402
from txuac.sip.digest import Challenge, Credentials, authorization, choose_challenge, parse_challenges  # noqa: E402

TARGET_MD5_AUTH = 50_000

CREDENTIALS = Credentials("alice", "correct horse battery staple")
MD5_AUTH = Challenge(realm="sip.example.com", nonce="5e9e7c3a1f0b4d2c8a6e4f1b3d5c7a9e", algorithm="MD5",
                     algorithm_token="MD5", qop=("auth",), opaque="a8f3c2")
SHA256_AUTH_INT = Challenge(realm="sip.example.com", nonce="5e9e7c3a1f0b4d2c8a6e4f1b3d5c7a9e", algorithm="SHA-256",
                            algorithm_token="SHA-256", qop=("auth-int",), opaque="a8f3c2")
URI = "sip:sip.example.com;transport=udp"
BODY = (b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        b"m=audio 49170 RTP/AVP 0 8 101\r\n")
BODY = (BODY * (1024 // len(BODY) + 1))[:1024]

CHALLENGE_401 = Response(401)
CHALLENGE_401.headers.add("WWW-Authenticate", 'Digest realm="sip.example.com", '
                                              'nonce="5e9e7c3a1f0b4d2c8a6e4f1b3d5c7a9e", algorithm=MD5, qop="auth", '
                                              'opaque="a8f3c2"')


def md5_auth(nc: int) -> str:
    return authorization(MD5_AUTH, CREDENTIALS, "REGISTER", URI, b"", nc=nc)


def sha256_auth_int(nc: int) -> str:
    return authorization(SHA256_AUTH_INT, CREDENTIALS, "MESSAGE", URI, BODY, nc=nc)


def read_and_answer(nc: int) -> str:
    challenge, credentials = choose_challenge(parse_challenges(CHALLENGE_401), lambda c: CREDENTIALS)
    return authorization(challenge, credentials, "REGISTER", URI, b"", nc=nc)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print(f"SIP core: {'compiled (mypyc)' if COMPILED else 'pure Python'}, Python {sys.version.split()[0]}")
    a = per_core("(a) MD5, qop=auth", "headers", md5_auth, seconds)
    per_core(f"(b) SHA-256, qop=auth-int, {len(BODY)} byte body", "headers", sha256_auth_int, seconds)
    per_core("(c) MD5, qop=auth, parsing the 401 first", "headers", read_and_answer, seconds)
    print(f"target: (a) >= {TARGET_MD5_AUTH:,}/s {'met' if a >= TARGET_MD5_AUTH else 'MISSED'}")


if __name__ == "__main__":
    main()
