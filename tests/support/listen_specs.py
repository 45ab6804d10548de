"""Socket specs (``proto:host:port``) that parse, with what they mean, and ones that do not:
the core's parser and the configuration's are tested on the same lists."""

from __future__ import annotations

from txuac.sip.listen import ListenSpec

# entries that parse, and what they mean
GOOD_SOCKETS = [
    ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
    ("tcp:[::1]:5060", ListenSpec("tcp", "::1", 5060)),
    ("tls:0.0.0.0:5061", ListenSpec("tls", "0.0.0.0", 5061)),
    ("udp:127.0.0.1", ListenSpec("udp", "127.0.0.1", 5060)),
    ("tcp:127.0.0.1", ListenSpec("tcp", "127.0.0.1", 5060)),
    ("tls:127.0.0.1", ListenSpec("tls", "127.0.0.1", 5061)),
    ("tcp:[::1]", ListenSpec("tcp", "::1", 5060)),
    ("udp:[0:0::1]:5070", ListenSpec("udp", "::1", 5070)),
    ("UDP:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
    ("udp:127.0.0.1:0", ListenSpec("udp", "127.0.0.1", 0)),
    ("udp:127.0.0.1:65535", ListenSpec("udp", "127.0.0.1", 65535)),
]

BAD_SOCKETS = [
    "sctp:127.0.0.1:5060",
    "ws:127.0.0.1:5060",
    "127.0.0.1:5060",
    "udp",
    "udp:",
    "udp:localhost:5060",
    "udp:1.2.3:5060",
    "udp:256.1.1.1:5060",
    "udp:[1.2.3.4]",
    "udp:[1.2.3.4]:5060",
    "tcp:::1:5060",
    "tcp:[::1",
    "tcp:[::1]5060",
    "tcp:[]:5060",
    "udp:127.0.0.1:65536",
    "udp:127.0.0.1:-1",
    "udp:127.0.0.1:+5060",
    "udp:127.0.0.1:port",
    "udp:127.0.0.1:",
    "udp:127.0.0.1:\u00b2",  # str.isdigit() says yes, int() says no
    "udp:127.0.0.1:5060:5061",
    "tcp:[::1]:99999",
]
