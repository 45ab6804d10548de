"""A second, independent Digest implementation to check txuac.sip.digest against.

Written straight from the formulas of RFC 2617 3.2.2 and RFC 7616 3.4 with hashlib only:
nothing here imports txuac. ``ref_verify`` checks one (Proxy-)Authorization value as an
RFC 7616 server does.
"""

from __future__ import annotations

import hashlib
import re


_REF_HASHES = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    # RFC 7616 3.2 / FIPS 180-4 6.7: SHA-512/256 has its own initial values.
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}


def ref_split_algorithm(algorithm: str) -> tuple[str, bool]:
    """``"sha-256-sess"`` -> ``("SHA-256", True)``; no algorithm means MD5 (RFC 7616 3.3)."""
    name = (algorithm or "MD5").upper()
    if name.endswith("-SESS"):
        return name[: -len("-SESS")], True
    return name, False


def ref_hash(algorithm: str, data: bytes | str) -> str:
    """H(data) of RFC 7616 3.4: the lower-case hex digest."""
    base, _ = ref_split_algorithm(algorithm)
    if isinstance(data, str):
        data = data.encode("utf-8")
    return _REF_HASHES[base](data)


def ref_ha1(algorithm: str, username: str, realm: str, password: str | None = None, ha1: str | None = None,
            nonce: str = "", cnonce: str = "") -> str:
    """H(A1) (RFC 7616 3.4.2); -sess: H(H(user:realm:password) ":" nonce ":" cnonce), hex inside."""
    inner = ha1.lower() if ha1 is not None else ref_hash(algorithm, f"{username}:{realm}:{password}")
    if ref_split_algorithm(algorithm)[1]:
        return ref_hash(algorithm, f"{inner}:{nonce}:{cnonce}")
    return inner


def ref_response(*, algorithm: str = "MD5", username: str, realm: str, password: str | None = None,
                 ha1: str | None = None, nonce: str, method: str, uri: str, qop: str | None = None,
                 nc: str = "00000001", cnonce: str = "", body: bytes = b"") -> str:
    """The request-digest (RFC 2617 3.2.2.1, RFC 7616 3.4.1); qop None is the RFC 2069 form."""
    secret = ref_ha1(algorithm, username, realm, password, ha1, nonce, cnonce)
    if qop == "auth-int":
        a2 = f"{method}:{uri}:{ref_hash(algorithm, body)}"  # RFC 7616 3.4.3
    else:
        a2 = f"{method}:{uri}"
    if qop:
        return ref_hash(algorithm, f"{secret}:{nonce}:{nc}:{cnonce}:{qop}:{ref_hash(algorithm, a2)}")
    return ref_hash(algorithm, f"{secret}:{nonce}:{ref_hash(algorithm, a2)}")


def ref_userhash(algorithm: str, username: str, realm: str) -> str:
    """RFC 7616 3.4.4: username = H(unq(username) ":" unq(realm))."""
    return ref_hash(algorithm, f"{username}:{realm}")


_REF_PARAM = re.compile(r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^\s",]+)[ \t]*(,|\Z)')


def ref_parse(value: str) -> tuple[str, dict[str, str], set[str]]:
    """An independent reader of one credentials value: scheme, {lower name: unquoted value},
    and the names whose value was a quoted-string. Raises ValueError when it cannot read it."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    quoted: set[str] = set()
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _REF_PARAM.match(rest, pos)
        if m is None:
            raise ValueError(f"cannot read credentials at {rest[pos:pos + 20]!r}")
        name, raw = m.group(1).lower(), m.group(2)
        if name in params:
            raise ValueError(f"{name} given twice")
        if raw.startswith('"'):
            quoted.add(name)
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        pos = m.end()
    return scheme, params, quoted


class DigestMismatch(AssertionError):
    """A credentials value a correct RFC 7616 server would refuse, with the reason."""


def ref_verify(value: str, *, method: str, uri: str, body: bytes = b"", realm: str, username: str,
               password: str, nonce: str, algorithm: str = "MD5", qop_offered: tuple[str, ...] = (),
               opaque: str | None = None, userhash: bool = False) -> dict[str, str]:
    """Verify one (Proxy-)Authorization value as an RFC 7616 server does; return its params.

    Checks the shape too: the quoted and unquoted parameters of RFC 7616 3.4,
    the qop actually offered, nc as 8 hex digits, the algorithm echoed.
    """
    try:
        scheme, params, quoted = ref_parse(value)
    except ValueError as e:
        raise DigestMismatch(str(e)) from None
    if scheme.lower() != "digest":
        raise DigestMismatch(f"scheme {scheme!r}")
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in params:
            raise DigestMismatch(f"no {name}")
        if name not in quoted:
            raise DigestMismatch(f"{name} not quoted")
    for name in ("qop", "nc", "algorithm"):
        if name in quoted:
            raise DigestMismatch(f"{name} must not be quoted")
    if params["realm"] != realm:
        raise DigestMismatch(f"realm {params['realm']!r}")
    if params["nonce"] != nonce:
        raise DigestMismatch("unknown nonce")
    if params["uri"] != uri:
        raise DigestMismatch(f"uri {params['uri']!r} for {uri!r}")
    if ref_split_algorithm(params.get("algorithm", "MD5")) != ref_split_algorithm(algorithm):
        raise DigestMismatch(f"algorithm {params.get('algorithm')!r}")
    expected_user = ref_userhash(algorithm, username, realm) if userhash else username
    if params["username"] != expected_user:
        raise DigestMismatch("username")
    if userhash and params.get("userhash") != "true":
        raise DigestMismatch("userhash=true missing")
    if opaque is not None and params.get("opaque") != opaque:
        raise DigestMismatch("opaque not echoed")
    qop = params.get("qop")
    if qop_offered:
        if qop not in qop_offered:
            raise DigestMismatch(f"qop {qop!r} not offered")
        if re.fullmatch(r"[0-9a-f]{8}", params.get("nc", "")) is None:
            raise DigestMismatch(f"nc {params.get('nc')!r}")
        if not params.get("cnonce"):
            raise DigestMismatch("no cnonce")
    elif qop is not None:
        raise DigestMismatch("qop without an offer")
    expected = ref_response(algorithm=algorithm, username=username, realm=realm, password=password, nonce=nonce,
                            method=method, uri=uri, qop=qop, nc=params.get("nc", ""),
                            cnonce=params.get("cnonce", ""), body=body)
    if params["response"] != expected:
        raise DigestMismatch("wrong response")
    return params
