"""SIP messages for tests: ``wire`` builds a text around the headers a request needs,
``accepted_by`` lists the texts a parser wrongly accepts, ``options_request`` is an
OPTIONS ready to send."""

from __future__ import annotations

from txuac.sip import Request, SIPParseError, make_request


REQUIRED = (
    "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds",
    "From: <sip:alice@example.com>;tag=1928301774",
    "To: <sip:bob@example.com>",
    "Call-ID: a84b4c76e66710@pc33.example.com",
)


def wire(*lines: str, body: bytes = b"", start: str = "OPTIONS sip:bob@example.com SIP/2.0", length=True) -> bytes:
    """A message: ``start``, the required headers, ``lines``, Content-Length (unless not ``length``), ``body``.

    CSeq carries the method of a request line (OPTIONS for a status line).
    """
    method = "OPTIONS" if start.startswith("SIP/") else start.split(" ")[0]
    head = [start, *REQUIRED, f"CSeq: 1 {method}", *lines]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body


def accepted_by(parse, texts) -> list:
    """Those of ``texts`` that ``parse`` does not refuse with SIPParseError (expected: none)."""
    accepted = []
    for text in texts:
        try:
            parse(text)
        except SIPParseError:
            continue
        accepted.append(text)
    return accepted


def options_request(uri: str, content_length: bool = True) -> Request:
    """An OPTIONS to ``uri``; with Content-Length (RFC 3261 18.3 needs it on TCP and TLS)."""
    request = make_request("OPTIONS", uri, "sip:txuac@test.example")
    if not content_length:
        request.headers.remove("Content-Length")
    return request
