"""Parser throughput on one core.

(a) a 200 OK to REGISTER with three Vias and two Contacts, reading what a
    registrant needs: status, top Via branch, CSeq, Call-ID, each Contact's expires;
(b) an INVITE with SDP parsed through every typed view and serialised again;
(c) Kamailio's 401 to a REGISTER: the transaction key (top Via branch, CSeq method),
    then the challenge;
(d) an INVITE as a proxy sees it: the stack's transaction key, then validate().

Usage: python bench/parse.py [seconds-per-case]
"""

from __future__ import annotations

import os
import sys

# An installed txuac (compiled by mypyc, see setup.py) wins over the checkout.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from measure import per_core  # noqa: E402
from txuac.sip import COMPILED, parse_message  # noqa: E402

REGISTER_OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK.reg.77aa01;rport=5060;received=192.0.2.10\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK.proxy.5b1c\r\n"
    b"Via: SIP/2.0/TCP 203.0.113.5:5060;branch=z9hG4bK.edge.0d3f;rport\r\n"
    b"From: <sip:1000@sip.example.com>;tag=a73kszlfl\r\n"
    b"To: <sip:1000@sip.example.com>;tag=37GkEhwl6\r\n"
    b"Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.10\r\n"
    b"CSeq: 12 REGISTER\r\n"
    b"Contact: <sip:1000@192.0.2.10:5060;line=9c7f>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n"
    b"Contact: <sip:1000@198.51.100.44:5062;transport=tcp>;expires=1200\r\n"
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Server: Kamailio (5.6.3 (x86_64/linux))\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: \"Bob\" <sip:bob@biloxi.example.com>\r\n"
    b"From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n"
    b"Route: <sip:proxy1.example.com;lr>, <sip:proxy2.example.com;lr;ftag=1928301774>\r\n"
    b"Record-Route: <sip:rr.example.com;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"Proxy-Authorization: Digest username=\"alice\", realm=\"atlanta.example.com\", "
    b"nonce=\"84a4cc6f3082121f32b42a2187831a9e\", uri=\"sip:bob@biloxi.example.com\", "
    b"response=\"7587245234b3434cc3412213e5f113a5432\", algorithm=MD5, qop=auth, nc=00000001, "
    b"cnonce=\"0a4f113b\"\r\n"
    b"User-Agent: Softphone Beta1.5\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 142\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


CHALLENGE = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;rport=5070;branch=z9hG4bK.4f7a9c1e2d3b\r\n"
    b"From: <sip:1000@127.0.0.1>;tag=8a1f0c77\r\n"
    b"To: <sip:1000@127.0.0.1>;tag=4b0f9a2c1d8e7f60a5b4c3d2e1f0a9b8-1f2e\r\n"
    b"Call-ID: 5c2a8e0f-1b3d-4c6e-9f8a-7b6c5d4e3f2a@127.0.0.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"WWW-Authenticate: Digest realm=\"127.0.0.1\", "
    b"nonce=\"ZXYxOWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5\", qop=\"auth\"\r\n"
    b"Server: kamailio (5.7.4 (x86_64/linux))\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def registrant_read(data: bytes) -> None:
    message = parse_message(data)
    message.status
    message.top_via.branch
    message.cseq.number
    message.call_id
    for contact in message.contacts:
        contact.expires


def full_round_trip(data: bytes) -> None:
    message = parse_message(data)
    message.validate()
    message.uri.host
    for via in message.via:
        via.branch
    message.from_.uri.user
    message.to.uri.host
    for contact in message.contacts:
        contact.uri.params
    for route in message.route:
        route.uri.params
    message.record_route[0].uri
    message.proxy_authorization[0].get("response")
    message.tokens("Allow")
    message.tokens("Supported")
    bytes(message)


def challenge_read(data: bytes) -> None:
    message = parse_message(data)
    message.top_via.branch
    message.cseq.method
    message.www_authenticate[0].get("nonce")


def proxy_validate(data: bytes) -> None:
    message = parse_message(data)
    message.top_via.branch
    message.cseq.method
    message.validate()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print(f"SIP core: {'compiled (mypyc)' if COMPILED else 'pure Python'}, Python {sys.version.split()[0]}")
    a = per_core("(a) 200 OK to REGISTER, registrant fields", "messages", lambda _: registrant_read(REGISTER_OK),
                 seconds)
    b = per_core("(b) INVITE with SDP, every view + serialise", "messages", lambda _: full_round_trip(INVITE),
                 seconds)
    per_core("(c) 401 to REGISTER, transaction key + challenge", "messages",
             lambda _: challenge_read(CHALLENGE), seconds)
    per_core("(d) INVITE, transaction key + validate()", "messages", lambda _: proxy_validate(INVITE), seconds)
    print(f"targets: (a) >= 50,000/s {'met' if a >= 50000 else 'MISSED'}; (b) >= 15,000/s {'met' if b >= 15000 else 'MISSED'}")


if __name__ == "__main__":
    main()
