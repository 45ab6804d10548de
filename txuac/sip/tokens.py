"""Random tokens: branches, tags, Call-IDs and cnonces (RFC 3261 8.1.1.4, 8.1.1.7, 19.3).

They come from ``os.urandom``, as ``secrets.token_hex`` does. The difference is that
the bytes are read a page at a time. A REGISTER cycle needs five tokens, and at
thousands of cycles a second one system call per token was a measurable share of
the CPU (bench/registrations.py).
"""

from __future__ import annotations

import os
from typing import Final

_PAGE: Final = 4096


class TokenSource:
    """Hex tokens cut from a buffer of system randomness, refilled when used up."""

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0

    def hex(self, nbytes: int) -> str:
        """``nbytes`` random bytes as ``2 * nbytes`` lower-case hex digits."""
        start = self._position
        end = start + nbytes
        if end > len(self._buffer):
            self._buffer = os.urandom(max(_PAGE, nbytes))
            start, end = 0, nbytes
        self._position = end
        return self._buffer[start:end].hex()

    def forget(self) -> None:
        """Drop the buffered bytes (a forked child must not repeat its parent's tokens)."""
        self._buffer = b""
        self._position = 0


_SOURCE: Final = TokenSource()
os.register_at_fork(after_in_child=_SOURCE.forget)


def token_hex(nbytes: int) -> str:
    """Like ``secrets.token_hex``: ``nbytes`` of system randomness as hex."""
    return _SOURCE.hex(nbytes)
