"""uacreg values that would make bad SIP, each with the reason txuac must give when it
refuses it: for the row rules alone, for rows loaded from a real table and for uac.reg_add
over real HTTP."""

from __future__ import annotations

# (column, value, the reason's text after "invalid COLUMN: ")
BAD_VALUES: list[tuple[str, object, str]] = [
    ("contact_user", 'line"1;x', "not a SIP user part"),
    ("expires", 10**20, "100000000000000000000 is out of range (0 to 2147483647)"),
    ("flags", -1, "-1 is out of range"),
    ("reg_delay", 2**31, "2147483648 is out of range"),
    ("r_username", "u" * 20_000, "longer than 64 characters"),
    ("contact_addr", "192.0.2.1:5060\r\nX-Injected: 1", "holds a CR, LF or NUL character"),
    ("contact_addr", "192.0.2.1:5060\n", "holds a CR, LF or NUL character"),
    ("contact_addr", "user@192.0.2.1", "does not make a Contact URI"),
    ("contact_addr", "192.0.2.1:99999", "does not make a Contact URI"),
    ("l_uuid", "a b", "not a SIP user part"),
    ("l_uuid", "x" * 65, "longer than 64 characters"),
    ("l_uuid", "a;b", "not usable as a Contact line parameter"),
    ("l_username", "who@where", "not a SIP user part"),
    ("l_domain", "pbx example", "does not make a SIP URI"),
    ("r_domain", "user@sip.example", "not a host[:port]"),
    ("r_domain", "d" * 65, "longer than 64 characters"),
    ("realm", 'evil", response="x', "holds a quote, a backslash or a control character"),
    ("auth_username", "a\\b", "holds a quote, a backslash or a control character"),
    ("auth_username", "a\x00b", "holds a CR, LF or NUL character"),
    ("auth_password", "p" * 65, "longer than 64 characters"),
    ("auth_password", "pw\r\n", "holds a CR, LF or NUL character"),
    ("auth_proxy", "proxy.example.com", "not a SIP URI"),
    ("auth_proxy", "tel:+15551234", "not a sip: or sips: URI"),
    ("auth_proxy", "sip:" + "p" * 252, "longer than 255 characters"),
    ("socket", "udp:not-an-address:5060", "not-an-address"),
    ("socket", "sctp:127.0.0.1:5060", "must start with udp:, tcp: or tls:"),
]
