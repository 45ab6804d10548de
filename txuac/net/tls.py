"""TLS contexts from [tls]: our certificate for listeners, trust roots for clients."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from txuac.errors import ConfigError

if TYPE_CHECKING:  # the settings' type only: the stack does not import the configuration
    from txuac.config import TLSSettings

_CLIENT_CONTEXTS = 256  # server names whose client context is kept
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"[tls] {what}: cannot read {path}: {e.strerror or e}") from None


def _certificates(path: str, what: str) -> list[ssl.Certificate]:
    """Every PEM certificate in ``path``, in file order; ConfigError when there is none or one is bad."""
    blocks = _PEM_CERT_RE.findall(_read(path, what))
    if not blocks:
        raise ConfigError(f"[tls] {what}: no certificate in {path}")
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:  # pyOpenSSL raises its own errors for bad PEM
        raise ConfigError(f"[tls] {what}: bad certificate in {path}: {e}") from None


def _certificate_options(settings: TLSSettings, **kwargs) -> ssl.CertificateOptions:
    """CertificateOptions with our certificate, the rest of its file as the chain (RFC 5246
    7.4.2: intermediates go with the leaf), and the private key checked against it."""
    chain = _certificates(settings.certificate, "certificate")
    try:
        key = ssl.KeyPair.load(_read(settings.private_key, "private_key"), crypto.FILETYPE_PEM)
        options = ssl.CertificateOptions(privateKey=key.original, certificate=chain[0].original,
                                         extraCertChain=[c.original for c in chain[1:]], **kwargs)
        with warnings.catch_warnings():
            # Twisted hands pyOpenSSL X509/PKey objects to pyOpenSSL, which deprecates them.
            warnings.filterwarnings("ignore", "Passing pyOpenSSL", DeprecationWarning)
            options.getContext()  # built (and cached) now: a key not matching fails here
    except Exception as e:  # pyOpenSSL raises its own errors for bad PEM or a mismatched key
        raise ConfigError(f"[tls] certificate/private_key: not a usable PEM pair: {e}") from None
    return options


def server_options(settings: TLSSettings) -> ssl.CertificateOptions:
    """Our certificate, its chain and key for tls: listeners."""
    if settings.certificate is None or settings.private_key is None:
        raise ConfigError("[tls] certificate and private_key are needed for a tls: socket")
    return _certificate_options(settings)


def client_options_factory(settings: TLSSettings):
    """A callable(server_name) giving connection creators that verify the peer (RFC 5922)
    with service_identity, against ``ca_file`` or the platform's trust store.

    With ``verify_server = false`` nothing is verified (the server name still goes in SNI).
    """
    client_certificate = None
    extra = {}
    if settings.certificate is not None and settings.private_key is not None:
        chain = _certificates(settings.certificate, "certificate")
        pem = chain[0].dumpPEM() + b"\n" + _read(settings.private_key, "private_key")
        try:
            client_certificate = ssl.PrivateCertificate.loadPEM(pem)
        except Exception as e:
            raise ConfigError(f"[tls] certificate/private_key: not a usable PEM pair: {e}") from None
        if len(chain) > 1:
            extra["extraCertChain"] = [c.original for c in chain[1:]]

    if not settings.verify_server:
        if settings.certificate is not None and settings.private_key is not None:
            context = _certificate_options(settings).getContext()
        else:
            context = ssl.CertificateOptions().getContext()

        def unverified(server_name: str):
            return _UnverifiedClient(context, server_name)

        return unverified

    if settings.ca_file is not None:
        trust_root = ssl.trustRootFromCertificates(_certificates(settings.ca_file, "ca_file"))
    else:
        trust_root = ssl.platformTrust()

    cache: dict[str, IOpenSSLClientConnectionCreator] = {}
    server_names = dict(settings.server_names)

    def options_for(server_name: str):
        # One context per name, reused: building one loads the trust roots again.
        creator = cache.get(server_name)
        if creator is None:
            expected = server_names.get(server_name.lower(), server_name)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Passing pyOpenSSL", DeprecationWarning)
                creator = _VerdictRecorder(ssl.optionsForClientTLS(expected, trustRoot=trust_root,
                                                                   clientCertificate=client_certificate,
                                                                   extraCertificateOptions=extra), expected)
            if len(cache) >= _CLIENT_CONTEXTS:
                cache.pop(next(iter(cache)))
            cache[server_name] = creator
        return creator

    return options_for


class TLSVerdict:
    """Why a TLS client connection failed, in words: OpenSSL's verification error or
    service_identity's mismatch, with the name the certificate was checked against."""

    def __init__(self, name: str, connection: SSL.Connection):
        self.name = name
        self.connection = connection

    def explain(self, reason: Failure) -> str | None:
        """The verdict for a connection lost with ``reason``; None when TLS was not the cause."""
        value = reason.value
        if isinstance(value, VerificationError):
            kinds = ", ".join(sorted({type(error).__name__ for error in value.errors}))
            return f"the certificate does not name {self.name} ({kinds})"
        if isinstance(value, SSL.Error):
            entries = value.args[0] if value.args and isinstance(value.args[0], list) else []
            text = ", ".join(e[2] for e in entries if isinstance(e, tuple) and len(e) == 3 and e[2]) or str(value)
            if "certificate verify failed" in text:
                detail = _verify_result(self.connection)
                if detail:
                    text = f"{text}: {detail}"
            return f"{text} (verifying {self.name})"
        return None


def _verify_result(connection: SSL.Connection) -> str | None:
    """OpenSSL's verification error of ``connection`` in its words ("unable to get local
    issuer certificate"). pyOpenSSL has no public API for it: its binding is used."""
    try:
        from OpenSSL._util import ffi, lib
        code = lib.SSL_get_verify_result(connection._ssl)
        if code == 0:  # X509_V_OK
            return None
        return ffi.string(lib.X509_verify_cert_error_string(code)).decode("ascii", "replace")
    except (ImportError, AttributeError):
        return None


@implementer(IOpenSSLClientConnectionCreator)
class _VerdictRecorder:
    """Wraps Twisted's verifying client creator: each connection's stream protocol gets a
    TLSVerdict (``tls_verdict``) to explain a failed handshake with."""

    def __init__(self, creator: IOpenSSLClientConnectionCreator, name: str):
        self.creator = creator
        self.name = name

    def clientConnectionForTLS(self, tls_protocol) -> SSL.Connection:
        connection = self.creator.clientConnectionForTLS(tls_protocol)
        tls_protocol.wrappedProtocol.tls_verdict = TLSVerdict(self.name, connection)
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClient:
    """Client connections that accept any certificate ([tls] verify_server = false)."""

    def __init__(self, context: SSL.Context, server_name: str):
        self.context = context
        self.server_name = server_name

    def clientConnectionForTLS(self, tls_protocol) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)  # Twisted sets the state and app data
        if not (isIPAddress(self.server_name) or isIPv6Address(self.server_name)):
            connection.set_tlsext_host_name(self.server_name.encode("idna"))  # RFC 6066 3: no IPs
        return connection
