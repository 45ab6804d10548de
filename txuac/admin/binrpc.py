"""Kamailio's binrpc (the ctl module's protocol, the one ``kamcmd`` speaks), sans-IO.

A packet is a header and a body. The header: one octet ``0xA1`` (magic 0xA, version 1),
one octet ``type << 4 | (len_len - 1) << 2 | (cookie_len - 1)``, the body length in
``len_len`` octets and the cookie in ``cookie_len`` octets, both big-endian. A reply
carries the request's cookie. The body is a sequence of records: one octet
``size << 4 | value type``; when bit 3 of size is set (not for doubles), its low 3 bits
are the length of a big-endian length that follows. Integers are big-endian in ``size``
octets, strings are NUL-terminated (the length counts the NUL), bytes are not, doubles
are integers in thousandths. A struct is a start tag, name/value pairs (the name an AVP
record, a NUL-terminated string) and an end tag (the struct type with bit 3 of size set);
an array is the same with the array type and plain values.

A request is the method name (a string) and the parameters; a reply is the values the
method added; a fault is an integer code and a string. Kamailio's ctl sends arrays as
structs of plain values, and a missing string as ``<null string>``: ``encode_value`` does so.

``FrameReader`` cuts packets out of a stream; ``parse_request``, ``build_reply`` and
``build_fault`` are pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txuac.errors import TxuacError

MAGIC_VERSION = 0xA1
REQUEST = 0
REPLY = 1
FAULT = 3

T_INT = 0
T_STR = 1
T_DOUBLE = 2
T_STRUCT = 3
T_ARRAY = 4
T_AVP = 5
T_BYTES = 6

NULL_STRING = "<null string>"
MIN_HEADER = 4  # magic/version, type and sizes, a length octet and a cookie octet
MAX_DEPTH = 32


class BinRPCError(TxuacError):
    """A packet that is not binrpc, or a body that does not parse."""


@dataclass(frozen=True)
class Header:
    kind: int  # REQUEST, REPLY or FAULT
    body_length: int
    cookie: int
    size: int  # octets of the header


@dataclass(frozen=True)
class Request:
    cookie: int
    method: str
    params: list


def _int_octets(value: int, unsigned_bits: int) -> bytes:
    """``value`` in the fewest big-endian octets (none for 0), as Kamailio writes it."""
    value &= (1 << unsigned_bits) - 1
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def parse_header(data: bytes) -> Header | None:
    """The header at the start of ``data``, or None while it is incomplete."""
    if data and data[0] != MAGIC_VERSION:
        raise BinRPCError(f"not a binrpc version 1 packet (first octet 0x{data[0]:02x}, expected 0x{MAGIC_VERSION:02x})")
    if len(data) < 2:
        return None
    kind = data[1] >> 4
    if kind not in (REQUEST, REPLY, FAULT):
        raise BinRPCError(f"unknown packet type {kind}")
    len_len = ((data[1] >> 2) & 3) + 1
    cookie_len = (data[1] & 3) + 1
    size = 2 + len_len + cookie_len
    if len(data) < size:
        return None
    body_length = int.from_bytes(data[2:2 + len_len], "big")
    cookie = int.from_bytes(data[2 + len_len:size], "big")
    return Header(kind, body_length, cookie, size)


def build_header(kind: int, body_length: int, cookie: int) -> bytes:
    length = _int_octets(body_length, 32) or b"\x00"
    cookie_octets = _int_octets(cookie, 32) or b"\x00"
    return bytes((MAGIC_VERSION, kind << 4 | (len(length) - 1) << 2 | (len(cookie_octets) - 1))) + length + cookie_octets


# --- records ---------------------------------------------------------------------------

def _record(kind: int, payload: bytes) -> bytes:
    if len(payload) < 8:
        return bytes((len(payload) << 4 | kind,)) + payload
    length = _int_octets(len(payload), 32)
    return bytes(((8 | len(length)) << 4 | kind,)) + length + payload


def _tag(kind: int, end: bool) -> bytes:
    return bytes(((0x80 if end else 0) | kind,))


def _int_record(value: int) -> bytes:
    return _record(T_INT, _int_octets(value, 32))


def _string(kind: int, text: str) -> bytes:
    return _record(kind, text.encode("utf-8", "replace") + b"\x00")


def encode_value(value: Any, depth: int = 0) -> bytes:
    """One value as ctl's ``rpc->add`` writes it: bool and int (32 bits; larger ones as
    doubles), float, str, None (``<null string>``), bytes, dict (a struct), list (an
    array, written as a struct of plain values as ctl does)."""
    if depth > MAX_DEPTH:
        raise BinRPCError(f"values nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool):
        return _int_record(int(value))
    if isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            return _int_record(value)
        value = float(value)
    if isinstance(value, float):
        return _record(T_DOUBLE, _int_octets(int(round(value * 1000)), 64))
    if value is None:
        return _string(T_STR, NULL_STRING)
    if isinstance(value, str):
        return _string(T_STR, value)
    if isinstance(value, (bytes, bytearray)):
        return _record(T_BYTES, bytes(value))
    if isinstance(value, dict):
        members = b"".join(_string(T_AVP, str(name)) + encode_value(member, depth + 1)
                           for name, member in value.items())
        return _tag(T_STRUCT, False) + members + _tag(T_STRUCT, True)
    if isinstance(value, (list, tuple)):
        return _tag(T_STRUCT, False) + b"".join(encode_value(item, depth + 1) for item in value) + _tag(T_STRUCT, True)
    return _string(T_STR, str(value))


def build_packet(kind: int, cookie: int, body: bytes) -> bytes:
    return build_header(kind, len(body), cookie) + body


def build_reply(cookie: int, result: Any) -> bytes:
    """The reply to a request: a list result is a sequence of values (as a Kamailio
    method adds one per ``rpc->add``), None adds nothing, anything else one value."""
    if result is None:
        values: list = []
    elif isinstance(result, list):
        values = result
    else:
        values = [result]
    return build_packet(REPLY, cookie, b"".join(encode_value(value) for value in values))


def build_fault(cookie: int, code: int, message: str) -> bytes:
    return build_packet(FAULT, cookie, _int_record(code) + _string(T_STR, message[:255]))


def build_request(cookie: int, method: str, params: list) -> bytes:
    return build_packet(REQUEST, cookie, _string(T_STR, method) + b"".join(encode_value(p) for p in params))


def _read_record(body: bytes, offset: int) -> tuple[int, int, bool, int]:
    """(type, payload length, end tag, payload offset) of the record at ``offset``."""
    octet = body[offset]
    kind = octet & 0x0F
    size = octet >> 4
    offset += 1
    end = False
    if kind != T_DOUBLE and size & 8:
        end = True
        octets = size & 7
        if offset + octets > len(body):
            raise BinRPCError("a record's length runs past the end of the packet")
        size = int.from_bytes(body[offset:offset + octets], "big")
        offset += octets
    if offset + size > len(body):
        raise BinRPCError(f"a record of {size} octets runs past the end of the packet")
    return kind, size, end, offset


def _signed32(payload: bytes) -> int:
    value = int.from_bytes(payload, "big")
    return value - (1 << 32) if len(payload) == 4 and value >= 1 << 31 else value


def decode_values(body: bytes) -> list:
    """The values of a body (strings as str, structs as dicts, arrays as lists)."""
    values, offset = _decode_sequence(body, 0, None, 0)
    return values


def _decode_sequence(body: bytes, offset: int, closing: int | None, depth: int) -> tuple[list, int]:
    if depth > MAX_DEPTH:
        raise BinRPCError(f"structs or arrays nested deeper than {MAX_DEPTH} levels")
    values: list = []
    while offset < len(body):
        kind, size, end, start = _read_record(body, offset)
        if kind in (T_STRUCT, T_ARRAY) and end and size == 0:
            if kind != closing:
                raise BinRPCError("an end tag without its start")
            return values, start
        value, offset = _decode_one(body, offset, depth)
        values.append(value)
    if closing is not None:
        raise BinRPCError("a struct or array without its end tag")
    return values, offset


def _decode_one(body: bytes, offset: int, depth: int) -> tuple[Any, int]:
    kind, size, end, start = _read_record(body, offset)
    payload = body[start:start + size]
    after = start + size
    if kind == T_INT:
        return _signed32(payload), after
    if kind == T_DOUBLE:
        value = int.from_bytes(payload, "big", signed=False)
        if len(payload) == 8 and value >= 1 << 63:
            value -= 1 << 64
        return value / 1000, after
    if kind == T_STR:
        return payload.rstrip(b"\x00").decode("utf-8", "replace"), after
    if kind == T_BYTES:
        return bytes(payload), after
    if kind == T_STRUCT and not end:
        return _decode_struct(body, after, depth + 1)
    if kind == T_ARRAY and not end:
        items, offset = _decode_sequence(body, after, T_ARRAY, depth + 1)
        return items, offset
    raise BinRPCError(f"unexpected record type {kind}")


def _decode_struct(body: bytes, offset: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise BinRPCError(f"structs or arrays nested deeper than {MAX_DEPTH} levels")
    members: dict = {}
    plain: list = []
    while offset < len(body):
        kind, size, end, start = _read_record(body, offset)
        if kind == T_STRUCT and end and size == 0:
            return (members if members or not plain else plain), start
        if kind == T_AVP:
            name = body[start:start + size].rstrip(b"\x00").decode("utf-8", "replace")
            if start + size >= len(body):
                raise BinRPCError("a struct member without its value")
            members[name], offset = _decode_one(body, start + size, depth)
        else:
            value, offset = _decode_one(body, offset, depth)
            plain.append(value)
    raise BinRPCError("a struct without its end tag")


def parse_request(header: Header, body: bytes) -> Request:
    """The method and parameters of a request packet's body."""
    if header.kind != REQUEST:
        raise BinRPCError("not a request")
    if not body:
        raise BinRPCError("no method name")
    kind, size, end, start = _read_record(body, 0)
    if kind != T_STR:
        raise BinRPCError("the method name is not a string")
    method = body[start:start + size].rstrip(b"\x00").decode("utf-8", "replace")
    return Request(header.cookie, method, decode_values(body[start + size:]))


class FrameReader:
    """Cuts packets out of a byte stream: ``feed(data)`` returns the complete
    ``(header, body)`` pairs; a body longer than ``max_body`` or a packet that is not
    binrpc raises BinRPCError (the stream cannot be resynchronised: close it)."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Octets received that do not make a complete packet yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[Header, bytes]]:
        self._buffer += data
        packets = []
        while self._buffer:
            header = parse_header(bytes(self._buffer[:10]))
            if header is None:
                break
            if header.body_length > self.max_body:
                raise BinRPCError(f"a packet of {header.body_length} octets (at most {self.max_body})")
            end = header.size + header.body_length
            if len(self._buffer) < end:
                break
            packets.append((header, bytes(self._buffer[header.size:end])))
            del self._buffer[:end]
        return packets


__all__ = ["BinRPCError", "FrameReader", "Header", "Request", "build_fault", "build_reply", "build_request",
           "decode_values", "encode_value", "parse_header", "parse_request"]
