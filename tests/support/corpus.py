"""The RFC 4475 torture messages (tests/data/rfc4475) and what each must do."""

from __future__ import annotations

import os
from dataclasses import dataclass

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "rfc4475")

# Where parse_message/validate() refuses a message.
PARSE = "parse"
VALIDATE = "validate"

# How a StreamFramer fed the file as a TCP stream behaves.
FRAMES = "frames"  # one message: the whole file
WAITS = "waits"  # no message yet, every octet buffered
REJECTS = "rejects"  # SIPParseError naming Content-Length
TWO_MESSAGES = "two"  # dblreq: the trailing octets form a second message


@dataclass(frozen=True)
class Case:
    """The expected handling of one torture message."""

    name: str
    section: str
    kind: str  # "valid", "invalid" or "semantic" as in INDEX.md
    fails_at: str | None = None  # PARSE, VALIDATE or None
    status: int | None = None
    elements: tuple[str, ...] = ()  # acceptable SIPParseError.element values
    stream: str = FRAMES


def _valid(name: str, section: str, stream: str = FRAMES) -> Case:
    return Case(name, section, "valid", stream=stream)


def _invalid(name: str, section: str, fails_at: str, *elements: str, status: int = 400, stream: str = FRAMES) -> Case:
    return Case(name, section, "invalid", fails_at, status, elements, stream)


def _semantic(name: str, section: str, fails_at: str | None = None, *elements: str, stream: str = FRAMES) -> Case:
    return Case(name, section, "semantic", fails_at, 400 if fails_at else None, elements, stream)


CASES: dict[str, Case] = {
    case.name: case
    for case in [
        _valid("wsinv", "3.1.1.1"),
        _valid("intmeth", "3.1.1.2"),
        _valid("esc01", "3.1.1.3"),
        _valid("escnull", "3.1.1.4"),
        _valid("esc02", "3.1.1.5"),
        _valid("lwsdisp", "3.1.1.6"),
        _valid("longreq", "3.1.1.7"),
        _valid("dblreq", "3.1.1.8", stream=TWO_MESSAGES),
        _valid("semiuri", "3.1.1.9"),
        _valid("transports", "3.1.1.10"),
        _valid("mpart01", "3.1.1.11"),
        _valid("unreason", "3.1.1.12"),
        _valid("noreason", "3.1.1.13"),
        # Both the Via and the Contact line carry empty parameters.
        _invalid("badinv01", "3.1.2.1", VALIDATE, "Via", "Contact"),
        # A stream cannot tell a short body from a slow one.
        _invalid("clerr", "3.1.2.2", PARSE, "Content-Length", stream=WAITS),
        _invalid("ncl", "3.1.2.3", PARSE, "Content-Length", stream=REJECTS),
        _invalid("scalar02", "3.1.2.4", PARSE, "CSeq"),
        _invalid("scalarlg", "3.1.2.5", PARSE, "CSeq"),
        _invalid("quotbal", "3.1.2.6", VALIDATE, "To"),
        _invalid("ltgtruri", "3.1.2.7", PARSE, "Request-URI"),
        _invalid("lwsruri", "3.1.2.8", PARSE, "request line"),
        _invalid("lwsstart", "3.1.2.9", PARSE, "request line"),
        _invalid("trws", "3.1.2.10", PARSE, "request line"),
        _invalid("escruri", "3.1.2.11", PARSE, "Request-URI"),
        # RFC 4475 allows accepting it: only the Date view (and validate) refuse.
        _invalid("baddate", "3.1.2.12", VALIDATE, "Date"),
        _invalid("regbadct", "3.1.2.13", VALIDATE, "Contact"),
        _invalid("badaspec", "3.1.2.14", VALIDATE, "To"),
        # From and To both have unquoted display names with a comma. The file
        # lacks the empty line ending the header section (a datagram may end
        # there, a stream must wait for it).
        _invalid("baddn", "3.1.2.15", VALIDATE, "From", "To", stream=WAITS),
        _invalid("badvers", "3.1.2.16", PARSE, "start line", status=505),
        _invalid("mismatch01", "3.1.2.17", PARSE, "CSeq"),
        _invalid("mismatch02", "3.1.2.18", PARSE, "CSeq"),
        _invalid("bigcode", "3.1.2.19", PARSE, "status line"),
        _semantic("badbranch", "3.2.1"),
        # To, From, Call-ID and Max-Forwards are missing.
        _semantic("insuf", "3.3.1", VALIDATE, "To", "From", "Call-ID"),
        _semantic("unkscm", "3.3.2"),
        _semantic("novelsc", "3.3.3"),
        _semantic("unksm2", "3.3.4"),
        _semantic("bext01", "3.3.5"),
        _semantic("invut", "3.3.6"),
        _semantic("regaut01", "3.3.7"),
        _semantic("multi01", "3.3.8", PARSE, "CSeq"),
        _semantic("mcl01", "3.3.9", PARSE, "Content-Length", stream=REJECTS),
        _semantic("bcast", "3.3.10"),
        _semantic("zeromf", "3.3.11"),
        _semantic("cparam01", "3.3.12"),
        _semantic("cparam02", "3.3.13"),
        _semantic("regescrt", "3.3.14"),
        _semantic("sdp01", "3.3.15"),
        # RFC 2543 style: no Content-Length, so a stream cannot frame it.
        _semantic("inv2543", "3.4.1", stream=REJECTS),
    ]
}


def load(name: str) -> bytes:
    """The raw octets of ``<name>.dat``."""
    with open(os.path.join(DATA_DIR, name + ".dat"), "rb") as f:
        return f.read()


def names(kind: str | None = None) -> list[str]:
    """Case names in RFC order, optionally only those of one kind."""
    return [name for name, case in CASES.items() if kind is None or case.kind == kind]


def data_files() -> list[str]:
    """The message names present in the data directory."""
    return sorted(f[:-4] for f in os.listdir(DATA_DIR) if f.endswith(".dat"))


def index_kinds() -> dict[str, tuple[str, str]]:
    """name -> (section, kind) from the table of INDEX.md."""
    result = {}
    with open(os.path.join(DATA_DIR, "INDEX.md"), encoding="utf-8") as f:
        for line in f:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0].endswith(".dat"):
                result[cells[0][:-4]] = (cells[1], cells[2])
    return result
