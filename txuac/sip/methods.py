"""The SIP request methods txuac knows by name (RFC 3261 and its extensions)."""

from __future__ import annotations

from typing import Final

#: RFC 3261, 3262 (PRACK), 3265/6665 (SUBSCRIBE, NOTIFY), 3311 (UPDATE), 3428 (MESSAGE),
#: 3515 (REFER), 3903 (PUBLISH), 6086 (INFO).
METHODS: Final[tuple[str, ...]] = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY",
                            "MESSAGE", "INFO", "REFER", "UPDATE", "PRACK", "PUBLISH")
KNOWN_METHODS: Final[frozenset[str]] = frozenset(METHODS)
