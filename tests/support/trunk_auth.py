"""A trunk's digest challenge for the proxy's uac_auth tests, and the answer to it computed
here independently of txuac.sip.digest (RFC 2617 3.2.2, qop=auth)."""

from __future__ import annotations

import hashlib

from txuac.sip.fields import parse_auth_list


REALM = "trunk.example"


OWN_HA1 = hashlib.md5(f"own-user:{REALM}:own-secret".encode()).hexdigest()


def auth_params(header: str) -> dict[str, str | None]:
    parsed = parse_auth_list(header, "Proxy-Authorization")[0]
    return {name.lower(): parsed.get(name) for name, _ in parsed.params}


def digest_response(header: str, method: str, password: str, user: str) -> str:
    """RFC 2617 3.2.2 with qop=auth, computed here independently of txuac.sip.digest."""
    params = auth_params(header)
    ha1 = hashlib.md5(f"{user}:{params['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{params['uri']}".encode()).hexdigest()
    text = f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}"
    return hashlib.md5(text.encode()).hexdigest()


def challenge(realm=REALM, nonce="n0nce"):
    return ("Proxy-Authenticate", f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5')
