"""Where the credentials answering a Digest challenge come from: Kamailio's ``credential``
list, or one account's own (txuac.auth answers the challenges with them)."""

from __future__ import annotations

from typing import Iterable, Protocol

from zope.interface import Interface, implementer

from txuac.errors import ConfigError
from txuac.sip.digest import Challenge, Credentials


class CredentialSource(Protocol):
    """ICredentialSource as the type checker reads it (zope interfaces carry no method types)."""

    def credentials_for(self, challenge: Challenge) -> Credentials | None: ...


class ICredentialSource(Interface):
    """Where credentials for a challenge come from."""

    def credentials_for(challenge: Challenge) -> Credentials | None:  # noqa: N805 - zope signature
        """Credentials able to answer ``challenge``, or None."""


@implementer(ICredentialSource)
class CredentialList:
    """Kamailio's ``credential`` parameter: ``user:realm:password`` entries.

    For the same realm the last entry wins, as in Kamailio (its list is
    built by prepending).
    """

    def __init__(self, entries: Iterable[str] = ()):
        self._by_realm: dict[str, Credentials] = {}
        for entry in entries:
            username, sep1, rest = entry.partition(":")
            realm, sep2, password = rest.partition(":")
            if not (sep1 and sep2 and username and realm):
                raise ConfigError(f"credential {_redacted(entry)!r} is not 'user:realm:password'")
            self._by_realm[realm] = Credentials(username, password=password, realm=realm)

    def credentials_for(self, challenge: Challenge) -> Credentials | None:
        return self._by_realm.get(challenge.realm)

    def __len__(self) -> int:
        return len(self._by_realm)


@implementer(ICredentialSource)
class FixedCredentials:
    """One set of credentials: a request's own, or a registration account's.

    With ``realm`` None they answer any realm ("any realm" of Kamailio's
    auth_realm_avp left empty).
    """

    def __init__(self, credentials: Credentials):
        self.credentials = credentials

    def credentials_for(self, challenge: Challenge) -> Credentials | None:
        return self.credentials if self.credentials.fits(challenge) else None


def _redacted(entry: str) -> str:
    """An entry as it may be logged: user and realm at most, never what could be a password."""
    user, sep1, rest = entry.partition(":")
    realm, sep2, _ = rest.partition(":")
    if sep2:
        return f"{user}:{realm}:***"
    return f"{user}:***" if sep1 else "***"
