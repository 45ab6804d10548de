"""The ``vsf``/``vst`` Record-Route parameter value: Kamailio's encoding, and a signed variant.

Kamailio's encoding (K:src/modules/uac/replace.c ``replace_uri``/``restore_uri``,
reference §1.4), byte for byte, so dialogs survive a move between Kamailio and txuac:

- ``buf`` = the longer of the two bare URIs (no display, no ``<>``) with the shorter
  XORed over its first bytes; the longer one's tail stays in clear.
- with ``restore_passwd``, every byte of ``buf`` is XORed with the password repeated
  from index 0.
- base64 with the standard alphabet (``A-Z a-z 0-9 + /``), ``=`` padding written ``-``.
- decoding XORs the value with the URI now in the header: the first zero byte ends the
  other URI (the shorter one's tail XORed with itself). Refused: invalid base64, a
  decoded value shorter than the current URI, an empty result, a non-printable byte (C
  ``isprint``): what an endpoint that altered From/To usually produces.

It is obfuscation, not encryption (a known ``sip:`` prefix leaks the password's first
bytes), and a value altered on the way restores garbage when it still decodes to
printable bytes.

Signed variant (ours, ``restore_sign = true``; not understood by Kamailio)::

    <Kamailio value> "." <tag>
    tag = base64url, no padding, of HMAC-SHA256(key, "txuac-restore-sign-v1" 0x00
                                                 min(a, b) 0x00 max(a, b))[:12]

where ``a`` and ``b`` are the two bare URIs as bytes. ``.`` never occurs in a Kamailio
value, so Kamailio refuses ours as invalid base64 instead of misreading it. The tag
covers the URI pair, not the encoded text: whatever was changed, the Route parameter or
the From/To URI the decoding XORs against, the decoded pair no longer matches and the
value is refused (None) instead of restoring garbage; the value must also be the
canonical encoding of that pair, so no character can be changed unnoticed. The pair is ordered so that both
directions (decoding with the new URI or with the old one) verify the same tag. 12 bytes
of HMAC (96 bits) add 17 characters to the parameter. With signing on, an unsigned value
is refused too (else stripping the tag would bypass it).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
from base64 import b64decode, b64encode, urlsafe_b64encode
from dataclasses import dataclass
from typing import Final

from txuac.errors import AddressReplaceError, ConfigError

# K:src/core/parser/msg_parser.h MAX_URI_SIZE: the longest XOR buffer Kamailio encodes.
MAX_URI_SIZE: Final = 1024

_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECODE: Final = {char: index for index, char in enumerate(_ALPHABET)}
_SIGN_SEPARATOR: Final = "."
_SIGN_CONTEXT: Final = b"txuac-restore-sign-v1\x00"
_TAG_BYTES: Final = 12
_TAG_CHARS: Final = 16  # base64url of 12 bytes, no padding


def _wire_bytes(text: str) -> bytes:
    # The message model holds wire octets as str decoded utf-8/surrogateescape.
    return text.encode("utf-8", "surrogateescape")


def _xor(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """``data`` XOR ``mask`` (same length) as one big-integer operation, not byte by byte."""
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")


def _xor_password(buf: bytearray, password: bytes) -> None:
    if password:
        buf[:] = _xor(buf, (password * (len(buf) // len(password) + 1))[:len(buf)])


def _base64_dash(data: bytes) -> str:
    """Kamailio's ``encode_uri``: standard base64 with ``-`` for each padding ``=``."""
    return b64encode(data).decode("ascii").replace("=", "-")


def _unbase64_dash(value: str) -> bytearray | None:
    """Kamailio's ``decode_uri``; None where it fails (empty, too long, bad character)."""
    dashes = len(value) - len(value.rstrip("-"))
    if not value or dashes == len(value):  # Kamailio reads before its buffer on all dashes
        return None
    length = ((len(value) * 6) >> 3) - dashes
    if length > MAX_URI_SIZE:
        return None
    end = len(value) - dashes
    if len(value) % 4 == 0 and dashes <= 2 and "=" not in value and "-" not in value[:end]:
        # What _base64_dash writes: the standard decoder (C) gives the same bytes.
        try:
            return bytearray(b64decode(value[:end] + "=" * dashes, validate=True))
        except (binascii.Error, ValueError):  # a character outside the alphabet, non-ASCII
            return None
    out = bytearray()
    for start in range(0, end, 4):
        block = 0
        for offset, char in enumerate(value[start:min(start + 4, end)]):
            digit = _DECODE.get(char)
            if digit is None:
                return None
            block += digit << (18 - 6 * offset)
        out += block.to_bytes(3, "big")
    return out[:length]


@functools.lru_cache(maxsize=1024)
def encode_restore(old_uri: str, new_uri: str, password: str = "") -> str:
    """The ``vsf``/``vst`` value Kamailio writes for a URI replaced by another.

    Raises AddressReplaceError when the longer URI exceeds MAX_URI_SIZE bytes (Kamailio
    refuses the replacement then). Remembered: a replace checks the value can be made,
    the relay makes it again for the Record-Route, and a signed value is re-encoded at
    each decoding.
    """
    old, new = _wire_bytes(old_uri), _wire_bytes(new_uri)
    longer, shorter = (old, new) if len(old) > len(new) else (new, old)
    if len(longer) > MAX_URI_SIZE:
        raise AddressReplaceError(f"URI longer than {MAX_URI_SIZE} bytes")
    buf = bytearray(longer)
    buf[:len(shorter)] = _xor(longer[:len(shorter)], shorter)
    _xor_password(buf, _wire_bytes(password))
    return _base64_dash(bytes(buf))


@functools.lru_cache(maxsize=1024)
def decode_restore(value: str, current_uri: str, password: str = "") -> str | None:
    """The other URI of the pair ``value`` encodes, given the one now in the header.

    None where Kamailio's ``restore_uri`` gives up (invalid base64, decoded value shorter
    than the current URI, empty result, non-printable byte); never raises on any input.
    Remembered: every later request of a dialog (ACK, BYE, re-INVITE) carries the same
    value and URI.
    """
    decoded = _unbase64_dash(value)
    if decoded is None:
        return None
    _xor_password(decoded, _wire_bytes(password))
    current = _wire_bytes(current_uri)
    if len(decoded) < len(current):
        return None
    xored = _xor(decoded[:len(current)], current)
    end = xored.find(0)  # the other URI ends at the first zero byte, else goes on in clear
    result = xored[:end] if end >= 0 else xored + decoded[len(current):]
    # C isprint() in the C locale: 0x20-0x7e; "URI values altered by end points".
    if not result or not result.isascii() or not result.decode("ascii").isprintable():
        return None
    return result.decode("ascii")


@functools.lru_cache(maxsize=1024)
def _is_base64_dash(value: str) -> bool:
    """Whether ``_unbase64_dash`` decodes ``value`` (remembered with ``decode_restore``)."""
    return _unbase64_dash(value) is not None


def _tag(key: bytes, first: bytes, second: bytes) -> str:
    low, high = sorted((first, second))
    mac = hmac.new(key, _SIGN_CONTEXT + low + b"\x00" + high, hashlib.sha256).digest()
    return urlsafe_b64encode(mac[:_TAG_BYTES]).decode("ascii").rstrip("=")


def encode_restore_signed(old_uri: str, new_uri: str, key: str, password: str = "") -> str:
    """Kamailio's value followed by ``.`` and the HMAC tag of the URI pair (module docstring)."""
    if not key:
        raise ValueError("an empty signing key")
    value = encode_restore(old_uri, new_uri, password)
    return value + _SIGN_SEPARATOR + _tag(_wire_bytes(key), _wire_bytes(old_uri), _wire_bytes(new_uri))


def decode_restore_signed(value: str, current_uri: str, key: str, password: str = "") -> str | None:
    """The other URI of a signed value; None when unsigned, altered or undecodable."""
    if not key:
        return None
    body, separator, tag = value.rpartition(_SIGN_SEPARATOR)
    if not separator or len(tag) != _TAG_CHARS:
        return None
    other = decode_restore(body, current_uri, password)
    if other is None:
        return None
    # Only the canonical text: base64 leaves some bits of a last group unused, and a
    # changed unused bit must fail too.
    if encode_restore(current_uri, other, password) != body:
        return None
    expected = _tag(_wire_bytes(key), _wire_bytes(current_uri), _wire_bytes(other))
    if not hmac.compare_digest(expected, tag):
        return None
    return other


@dataclass(frozen=True)
class RestoreCodec:
    """The ``[uac]`` settings that shape the value: ``restore_passwd``, ``restore_sign``
    and ``restore_sign_key`` (the signing key; ``restore_passwd`` when empty)."""

    password: str = ""
    sign: bool = False
    sign_key: str = ""

    def __post_init__(self) -> None:
        if self.sign and not (self.sign_key or self.password):
            raise ConfigError("[routing] restore_sign = true needs restore_sign_key or restore_passwd")

    @property
    def _key(self) -> str:
        return self.sign_key or self.password

    def encode(self, old_uri: str, new_uri: str) -> str:
        """The parameter value for ``old_uri`` replaced by ``new_uri``."""
        if self.sign:
            return encode_restore_signed(old_uri, new_uri, self._key, self.password)
        return encode_restore(old_uri, new_uri, self.password)

    def well_formed(self, value: str) -> bool:
        """True when ``value`` has this encoding's shape (Kamailio re-adds such a value to
        its Record-Route whether or not it then restores)."""
        if self.sign:
            body, separator, tag = value.rpartition(_SIGN_SEPARATOR)
            return bool(separator) and len(tag) == _TAG_CHARS and _is_base64_dash(body)
        return _is_base64_dash(value)

    def decode(self, value: str, current_uri: str) -> str | None:
        """The other URI of the pair, or None when the value cannot be trusted."""
        if self.sign:
            return decode_restore_signed(value, current_uri, self._key, self.password)
        return decode_restore(value, current_uri, self.password)
