"""Message framing for stream transports (TCP, TLS): RFC 3261 18.3, RFC 5626 4.4.1."""

from __future__ import annotations

import enum
import re
from typing import Final

from txuac.errors import SIPParseError
from txuac.sip.message import parse_content_length
from txuac.sip.parser import DEFAULT_LIMITS, ParserLimits

# Content-Length (or its compact form "l") at the start of a header line; the
# value may follow a folded line break.
_CONTENT_LENGTH_RE: Final = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(?:\r\n[ \t]+)?([^\r\n]*)", re.IGNORECASE)


class KeepAlive(enum.Enum):
    """RFC 5626 4.4.1 keep-alives seen between messages."""

    PING = "ping"  # a double CRLF: the receiver answers with a single CRLF
    PONG = "pong"  # a single CRLF: the answer to our ping


PONG_BYTES: Final = b"\r\n"
PING_BYTES: Final = b"\r\n\r\n"


class StreamFramer:
    """Cut a byte stream into whole SIP messages.

    ``feed(data)`` accepts bytes in any chunking and returns a list whose
    items are complete messages (bytes, ready for ``parse_message``) or
    KeepAlive values. Content-Length is required on streams (RFC 3261 18.3);
    a message without it, or a header section or body beyond the limits,
    raises SIPParseError, after which the connection has to be closed since
    the stream can no longer be framed.

    ``expect_pings`` is True on the server side of a connection: a lone
    CRLF is then held until the next bytes show whether it starts a ping.
    """

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS, expect_pings: bool = True):
        self._buffer = bytearray()
        self._limits = limits
        self._expect_pings = expect_pings
        self._failed: SIPParseError | None = None

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add ``data``; return what it completed.

        When the stream breaks after some whole messages, those are returned
        first and the error is raised by the next call (and shown in ``error``
        at once), so that the result never depends on how bytes were chunked.
        """
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        out: list[bytes | KeepAlive] = []
        try:
            while self._next(out):
                pass
        except SIPParseError as e:
            self._failed = e
            self._buffer.clear()
            if not out:
                raise
        return out

    @property
    def error(self) -> SIPParseError | None:
        """The framing error that ended this stream, if any: the connection must be closed."""
        return self._failed

    def _next(self, out: list) -> bool:
        buffer = self._buffer
        if not buffer:
            return False
        if buffer[0] == 0x0D:  # CR: keep-alive or stray CRLF before a start line
            if buffer[:4] == PING_BYTES:
                del buffer[:4]
                out.append(KeepAlive.PING)
                return True
            if buffer[:2] == PONG_BYTES:
                if len(buffer) == 2 and self._expect_pings:
                    return False
                if len(buffer) == 3 and buffer[2] == 0x0D:
                    return False  # the rest of a ping may follow
                del buffer[:2]
                out.append(KeepAlive.PONG)
                return True
            if len(buffer) == 1:
                return False
        end = buffer.find(b"\r\n\r\n")
        limit = self._limits.max_message_size
        if end < 0:
            if len(buffer) > limit:
                raise SIPParseError(f"header section longer than {limit} octets", status=513)
            return False
        head = bytes(buffer[: end + 2])
        lengths = _CONTENT_LENGTH_RE.findall(head)
        if not lengths:
            raise SIPParseError("Content-Length is required on stream transports", element="Content-Length")
        if len(lengths) > 1:
            raise SIPParseError("more than one Content-Length", element="Content-Length")
        # The same reading as the parser's, so that framing and parsing agree.
        total = end + 4 + parse_content_length(lengths[0].decode("latin-1"), "Content-Length")
        if total > limit:
            raise SIPParseError(f"message of {total} octets exceeds {limit}", status=513)
        if len(buffer) < total:
            return False
        out.append(bytes(buffer[:total]))
        del buffer[:total]
        return True

    @property
    def buffered(self) -> int:
        """How many octets wait for the rest of their message."""
        return len(self._buffer)
