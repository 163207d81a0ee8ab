"""The local control plane's certificates: one CA, serving certificates and client ones.

Every identity is a client certificate signed by the cluster's own CA, made afresh for
each cluster directory (ECDSA P-256 keys, files mode 0600 in a 0700 directory):

- ``etcd-server``: etcd's serving certificate (etcd requires client certificates too);
- ``apiserver``: the API server's serving certificate (127.0.0.1, ``localhost`` and the
  in-cluster ``kubernetes.default.svc`` names);
- ``apiserver-etcd-client``: how the API server authenticates to etcd;
- ``admin``: the kubeconfig's user (group ``system:masters``);
- ``kube-controller-manager`` and ``kube-scheduler``: the built-in users that the default
  RBAC bindings already grant what those components need;
- ``kwok``, ``kube-state-metrics`` and ``node-pools``: group ``system:masters`` (local and
  loopback-only; KWOK writes node and pod status, kube-state-metrics lists everything,
  the node-pool controller creates and deletes nodes);
- ``service-account``: the key pair that signs service-account tokens.

The API server runs with ``--anonymous-auth=false``: every request needs one of these.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_IP = "10.96.0.1"
"""The ``kubernetes`` Service's cluster IP (the first of ``--service-cluster-ip-range``)."""

_VALID_DAYS = 365

CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # file stem: (common name = user, organisations = groups)
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", ()),
    "admin": ("infragym-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("kwok-controller", ("system:masters",)),
    "kube-state-metrics": ("kube-state-metrics", ("system:masters",)),
    "node-pools": ("infragym-node-pools", ("system:masters",)),
}
"""Client identities: file stem → (user, groups)."""


@dataclass(frozen=True)
class Pki:
    """Paths of a cluster's PKI files (``<stem>.crt`` and ``<stem>.key`` in :attr:`dir`).

    Attributes:
        dir: The directory holding them.
    """

    dir: Path

    def cert(self, stem: str) -> Path:
        """The certificate file of ``stem``."""
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        """The private key file of ``stem``."""
        return self.dir / f"{stem}.key"

    @property
    def ca(self) -> Path:
        """The CA certificate."""
        return self.cert("ca")


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
    sans: tuple[str, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        names: list[x509.GeneralName] = []
        for s in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                names.append(x509.DNSName(s))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """Create a fresh CA and every certificate the control plane needs in ``directory``.

    Args:
        directory: Created (mode 0700) if missing; existing files are overwritten.

    Returns:
        The paths.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    pki = Pki(directory)
    ca_key = _key()
    ca_name = _name("infragym-local-ca")
    ca_cert = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write(pki.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.key("ca"), _key_bytes(ca_key))

    def issue(stem: str, subject: x509.Name, **kind: object) -> None:
        key = _key()
        cert = _issue(subject, key, ca_name, ca_key, **kind)  # type: ignore[arg-type]
        _write(pki.cert(stem), cert.public_bytes(serialization.Encoding.PEM))
        _write(pki.key(stem), _key_bytes(key))

    issue("etcd-server", _name("etcd"), server=True, sans=("127.0.0.1", "localhost"))
    issue(
        "apiserver",
        _name("kube-apiserver"),
        server=True,
        sans=(
            "127.0.0.1",
            SERVICE_IP,
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
    )
    for stem, (user, groups) in CLIENTS.items():
        issue(stem, _name(user, groups), client=True)
    sa = _key()
    _write(pki.key("service-account"), _key_bytes(sa))
    _write(
        pki.cert("service-account"),  # the public key, in PEM, for --service-account-key-file
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki
