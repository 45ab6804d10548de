"""JSON laid out as Kamailio's jsonrpcs writes it (srjson, ``pretty_format`` 1): one member
or item per line, indented with tabs, a tab after each ``name:``. ``kamctl rpc`` turns the
tabs into two-column stops, so scripts that grep its lines see what Kamailio's give them."""

from __future__ import annotations

import json
import math
from typing import Any


def format_document(value: Any) -> bytes:
    """``value`` as srjson prints it, with a final newline."""
    return (_value(value, 0) + "\n").encode("utf-8")


def kamailio_layout(body: bytes | None) -> bytes:
    """A compact JSON answer body laid out as jsonrpcs does (nothing stays nothing)."""
    if not body:
        return b""
    return format_document(json.loads(body))


def _value(value: Any, depth: int) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "null"
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:f}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return _container("{", "}", [f"{json.dumps(str(name), ensure_ascii=False)}:\t{_value(item, depth + 1)}"
                                     for name, item in value.items()], depth)
    if isinstance(value, (list, tuple)):
        return _container("[", "]", [_value(item, depth + 1) for item in value], depth)
    return json.dumps(str(value), ensure_ascii=False)


def _container(opening: str, closing: str, entries: list[str], depth: int) -> str:
    inner = "\t" * (depth + 1)
    body = "".join(f"{inner}{entry}{',' if position < len(entries) - 1 else ''}\n"
                   for position, entry in enumerate(entries))
    return f"{opening}\n{body}{chr(9) * depth}{closing}"
