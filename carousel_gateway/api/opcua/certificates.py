"""The server's certificate, generated once and kept, and the client trust list.

Layout of ``[opcua] pki_dir`` (the usual OPC UA one): ``own/certs/server.der`` and
``own/private/server.pem`` (the key, mode 0600), ``trusted/`` (client certificates an
administrator trusts: copy a ``.der`` or ``.pem`` there, no restart), ``rejected/``
(certificates of clients that were refused, to move to ``trusted/`` after checking them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "CERTIFICATE_DAYS",
    "ClientTrust",
    "Pki",
    "certificate_problem",
    "ensure_server_certificate",
]

log = logging.getLogger(__name__)

#: Validity of the generated server certificate (about ten years: it is kept, and clients
#: trust it by its thumbprint; replacing it means every client trusts it again).
CERTIFICATE_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Pki:
    """Where the certificates live below ``pki_dir``."""

    root: Path

    @property
    def certificate(self) -> Path:
        return self.root / "own" / "certs" / "server.der"

    @property
    def private_key(self) -> Path:
        return self.root / "own" / "private" / "server.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"


def certificate_problem(certificate: x509.Certificate, application_uri: str) -> str | None:
    """Why a kept certificate cannot serve ``application_uri`` (None: it can)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "it has no subjectAltName (an OPC UA certificate names its application URI)"
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    if application_uri not in uris:
        shown = ", ".join(uris) or "none"
        return f"it names the application URI {shown}, not the configured {application_uri!r}"
    return None


def ensure_server_certificate(pki: Pki, application_uri: str, host: str) -> None:
    """Generate the server's key and certificate unless they exist; check a kept one.

    Blocking (file I/O, RSA key generation): run it in a thread. Raises OSError naming the
    files when a kept certificate does not match the configured application URI.
    """
    for folder in (pki.certificate.parent, pki.private_key.parent, pki.trusted, pki.rejected):
        folder.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.private_key.parent, 0o700)
    if pki.certificate.exists() and pki.private_key.exists():
        certificate = x509.load_der_x509_certificate(pki.certificate.read_bytes())
        problem = certificate_problem(certificate, application_uri)
        if problem:
            raise OSError(
                f"OPC UA server certificate {pki.certificate}: {problem}; set [opcua] "
                "application_uri to match, or delete the certificate and its key to have a "
                "new one generated (clients must then trust the new one)"
            )
        return
    key = generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
    ]
    if host not in ("", "0.0.0.0", "::", "localhost"):  # nosec B104
        names.append(x509.DNSName(host))
    certificate = generate_self_signed_app_certificate(
        key,
        "carousel-gateway",
        {"organizationName": "carousel-gateway"},
        names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=CERTIFICATE_DAYS,
    )
    descriptor = os.open(pki.private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(dump_private_key_as_pem(key))
    pki.certificate.write_bytes(certificate.public_bytes(Encoding.DER))
    log.info("OPC UA: generated the server certificate %s", pki.certificate)


class ClientTrust:
    """The trust list: a client certificate must be in ``trusted/`` (valid, for a client,
    naming the client's application URI). Reread when the folder changes, so trusting a
    client needs no restart; a refused certificate is copied to ``rejected/``."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self._store = TrustStore([pki.trusted], [])
        self._validator = CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION
            | CertificateValidatorOptions.PEER_CLIENT,
            self._store,
        )
        self._seen: tuple[tuple[str, float], ...] | None = None

    async def __call__(
        self, certificate: x509.Certificate, application: ua.ApplicationDescription
    ) -> None:
        """asyncua's certificate validator: raises ServiceError for a refused client."""
        listing = tuple(
            sorted((entry.name, entry.stat().st_mtime) for entry in os.scandir(self.pki.trusted))
        )
        try:
            if not listing:  # nobody trusted yet (an empty store cannot be built)
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            if listing != self._seen:
                await self._store.load()
                self._seen = listing
            await self._validator.validate(certificate, application)
        except ServiceError as exc:
            self._reject(certificate, exc)
            raise

    def _reject(self, certificate: x509.Certificate, exc: ServiceError) -> None:
        der = certificate.public_bytes(Encoding.DER)
        thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest()
        names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else "client"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in common_name)[:60]
        path = self.pki.rejected / f"{safe} [{thumbprint}].der"
        log.warning(
            "OPC UA: refused the client certificate %s (%s); trust it by moving %s to %s",
            common_name,
            ua.StatusCode(exc.code).name,
            path,
            self.pki.trusted,
        )
        if not path.exists():
            path.write_bytes(der)
