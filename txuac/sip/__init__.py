"""The sans-IO SIP core: messages, parsing, framing. No Twisted, no clock."""

from txuac.errors import SIPParseError
from txuac.sip.fields import WILDCARD, AuthParams, CSeq, NameAddress, RetryAfter, Via
from txuac.sip.framing import KeepAlive, StreamFramer
from txuac.sip.grammar import Parameters
from txuac.sip.headers import Headers
from txuac.sip.message import REASON_PHRASES, Message, Request, Response, make_request, make_response
from txuac.sip.parser import DEFAULT_LIMITS, ParserLimits, parse_message
from txuac.sip.uri import AbsoluteURI, SipURI, parse_uri, unescape

from txuac.sip import parser as _parser_module

#: True when the core runs as C extensions built by mypyc (see setup.py).
COMPILED = not (_parser_module.__file__ or "").endswith(".py")

__all__ = [
    "COMPILED",
    "AbsoluteURI",
    "AuthParams",
    "CSeq",
    "DEFAULT_LIMITS",
    "Headers",
    "KeepAlive",
    "Message",
    "NameAddress",
    "Parameters",
    "ParserLimits",
    "REASON_PHRASES",
    "Request",
    "Response",
    "RetryAfter",
    "SIPParseError",
    "SipURI",
    "StreamFramer",
    "Via",
    "WILDCARD",
    "make_request",
    "make_response",
    "parse_message",
    "parse_uri",
    "unescape",
]
