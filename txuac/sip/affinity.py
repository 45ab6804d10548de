"""Which worker owns a call: the CRC-32 of its Call-ID, modulo the number of workers.

Every message of a call carries the same Call-ID (RFC 3261 8.1.1.4, 12.2.1.1): the
INVITE, its retransmissions, its CANCEL (9.1) and the ACK for a non-2xx (17.1.1.3), the
in-dialog requests of both sides, and the responses. So one rule sends all of them to one
worker, whichever source they come from (docs/workers.rst). The Call-ID is read from
the raw bytes, before any parsing, as a value compared byte by byte (20.8: it is
case-sensitive); the header name in any case, compact form ``i`` included.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

# The first Call-ID line of the header section; folded values (obsolete) are read up to
# the end of their first line, as every message of the call is.
_CALL_ID_LINE: Final = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID value of the SIP message ``data`` (trailing blanks dropped); None
    when its header section has none."""
    end = data.find(b"\r\n\r\n")
    match = _CALL_ID_LINE.search(data, 0, end if end >= 0 else len(data))
    if match is None:
        return None
    value = match.group(1).rstrip(b" \t")
    return value or None


def call_owner(data: bytes, workers: int) -> int | None:
    """The index (0 to ``workers`` - 1) of the worker that owns the call of ``data``;
    None without a Call-ID (whoever reads such a message answers it)."""
    call_id = call_id_of(data)
    if call_id is None:
        return None
    return zlib.crc32(call_id) % workers
