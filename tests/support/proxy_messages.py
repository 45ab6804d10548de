"""SIP messages written as text for the proxy's sans-IO tests (RFC 3261 and RFC 4475)."""

from __future__ import annotations

from tests.support import corpus
from txuac.sip import Request, Response, parse_message


def message(text: str) -> Request | Response:
    """Parse a message written with LF line ends."""
    head, _, body = text.partition("\n\n")
    return parse_message(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body.encode())


def rfc4475(name: str) -> Request | Response:
    return parse_message(corpus.load(name))


# RFC 3261 24.2 F1: Alice's INVITE to the atlanta.com proxy.
ALICE_INVITE = """INVITE sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=9fxced76sl
Call-ID: 3848276298220188511@atlanta.com
CSeq: 1 INVITE
Contact: <sip:alice@pc33.atlanta.com;transport=tcp>
Content-Type: application/sdp
Content-Length: 4

v=0
"""
