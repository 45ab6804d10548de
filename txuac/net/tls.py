"""TLS contexts from [tls]: our certificate for listeners, trust roots for clients."""

from __future__ import annotations

import re

from twisted.internet import ssl

from txuac.config import TLSSettings
from txuac.errors import ConfigError

_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"[tls] {what}: cannot read {path}: {e.strerror or e}") from None


def server_options(settings: TLSSettings) -> ssl.CertificateOptions:
    """Our certificate and key for tls: listeners."""
    if settings.certificate is None or settings.private_key is None:
        raise ConfigError("[tls] certificate and private_key are needed for a tls: socket")
    pem = _read(settings.certificate, "certificate") + b"\n" + _read(settings.private_key, "private_key")
    try:
        return ssl.PrivateCertificate.loadPEM(pem).options()
    except Exception as e:  # pyOpenSSL raises its own errors for bad PEM
        raise ConfigError(f"[tls] certificate/private_key: not a usable PEM pair: {e}") from None


def client_options_factory(settings: TLSSettings):
    """A callable(server_name) giving connection creators that verify the peer (RFC 5922)
    with service_identity, against ``ca_file`` or the platform's trust store."""
    if settings.ca_file is not None:
        certificates = [ssl.Certificate.loadPEM(pem) for pem in _PEM_CERT_RE.findall(_read(settings.ca_file, "ca_file"))]
        if not certificates:
            raise ConfigError(f"[tls] ca_file: no certificate in {settings.ca_file}")
        trust_root = ssl.trustRootFromCertificates(certificates)
    else:
        trust_root = ssl.platformTrust()
    client_certificate = None
    if settings.certificate is not None and settings.private_key is not None:
        pem = _read(settings.certificate, "certificate") + b"\n" + _read(settings.private_key, "private_key")
        client_certificate = ssl.PrivateCertificate.loadPEM(pem)

    def options_for(server_name: str):
        return ssl.optionsForClientTLS(server_name, trustRoot=trust_root, clientCertificate=client_certificate)

    return options_for
