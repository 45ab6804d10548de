"""``uac_auth`` in failure routes (Kamailio README 4.7; reference section 2), sans-IO.

The picked branch's 401/407 is answered for the request's next branch: one
(Proxy-)Authorization per realm we hold credentials for (Kamailio answers one header
only), the strongest challenge of each realm (``choose_per_realm``), the digest-uri being
the Request-URI that branch was sent to. Kamailio sends nothing either: the script's
``tm.t_relay()`` makes the new branch.

Credentials, in Kamailio's order (section 2.4): the request's own (Kamailio's
``auth_username_avp``/``auth_password_avp``/``auth_realm_avp``; here
``uac.credentials.username``, ``.password`` and ``.realm`` of the ``uac`` namespace,
which ``uac_reg_request_to`` fills), a realm left empty answering any realm; then the
``[uac] credential`` list. Mode bit 0 (``uac_auth(1)``): the password is an HA1.
"""

from __future__ import annotations

from dataclasses import dataclass

from txuac.auth import choose_per_realm
from txuac.errors import AuthenticationError
from txuac.sip.digest import Challenge, Credentials, NonceCounter, authorization, parse_challenges
from txuac.sip.message import Request, Response

HA1_MODE = 1  # uac_auth(mode) bit 0: the password is HA1 hex


@dataclass
class RequestCredentials:
    """The credentials a script gives one request (Kamailio's auth AVPs)."""

    username: str | None = None
    password: str | None = None
    realm: str | None = None  # None or "": any realm

    def __repr__(self) -> str:  # never show the secret
        return f"RequestCredentials({self.username!r}, password={'***' if self.password else None}, " \
               f"realm={self.realm!r})"


def _as_mode(credentials: Credentials, mode: int) -> Credentials:
    """``credentials`` with the password taken as an HA1 when ``mode`` says so."""
    if not mode & HA1_MODE or credentials.password is None:
        return credentials
    return Credentials(credentials.username, ha1=credentials.password.lower(), realm=credentials.realm)


def credentials_lookup(own: RequestCredentials, fallback, mode: int = 0):
    """The ``credentials_for(challenge)`` of section 2.4: the request's own credentials
    (both user and password set), then ``fallback`` (an ICredentialSource)."""

    def credentials_for(challenge: Challenge) -> Credentials | None:
        if own.username and own.password and (not own.realm or own.realm == challenge.realm):
            try:
                found = _as_mode(Credentials(own.username, password=own.password, realm=own.realm or None), mode)
            except AuthenticationError:
                found = None  # an HA1 of the wrong shape: the list may still answer
            if found is not None and found.fits(challenge):
                return found
        listed = fallback.credentials_for(challenge)
        if listed is None:
            return None
        try:
            found = _as_mode(listed, mode)
        except AuthenticationError:
            return None
        return found if found.fits(challenge) else None

    return credentials_for


def answer_challenge(request: Request, challenge: Response, digest_uri: str, credentials_for,
                     algorithms: tuple[str, ...], nonces: NonceCounter) -> list[tuple[Challenge, str]]:
    """``(challenge, header value)`` for each realm of ``challenge`` we can answer, for
    ``request`` sent to ``digest_uri``. AuthenticationError naming why when none."""
    chosen, reasons = choose_per_realm(parse_challenges(challenge), credentials_for, algorithms)
    if not chosen:
        raise AuthenticationError("; ".join(reasons) or "no Digest challenge")
    return [(picked, authorization(picked, credentials, request.method, digest_uri, request.body,
                                   nc=nonces.next(picked.nonce)))
            for picked, credentials in chosen]


__all__ = ["HA1_MODE", "RequestCredentials", "answer_challenge", "credentials_lookup"]
