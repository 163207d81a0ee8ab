"""Secrets for the self-managed clusters, derived deterministically from one secret seed.

Why a seed: the droplets receive their CA, bootstrap token, gossip keys and ACL tokens
through cloud-init ``user_data``, and DigitalOcean replaces a droplet whenever its
``user_data`` changes. Material generated afresh on every ``pulumi up`` would therefore
replace every node on every run. Instead, a layer takes one secret seed (a setting, kept
in the stack config as a Pulumi secret) and everything here is a pure function of it:

- keys are ECDSA P-256, whose private scalar can be derived from bytes
  (:func:`cryptography.hazmat.primitives.asymmetric.ec.derive_private_key`);
- certificates are signed with deterministic ECDSA (RFC 6979), have serial numbers
  derived from the seed and fixed validity dates, so the same seed gives byte-identical
  PEM on every run;
- tokens, UUIDs and gossip keys are HKDF-SHA256 output, one ``purpose`` label each, so
  learning one value reveals nothing about the others.

The admin client certificate is the exception to "fixed dates": it is not in any
``user_data`` (it only goes into the kubeconfig output), so its validity window starts on
the first day of the current month and lasts :data:`ADMIN_CERT_DAYS`; the kubeconfig
output therefore changes at most once a month and never replaces a droplet.

Nothing here talks to Pulumi; callers wrap the results in ``pulumi.Output.secret``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import string
import uuid
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SEED_MIN_LENGTH = 32
"""Shortest accepted seed (characters); :func:`new_seed` gives 64 hex digits (256 bits)."""

CA_NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
"""Start of every derived CA's validity. Changing it changes every CA (and so replaces
every control-plane droplet): treat it as frozen."""

CA_NOT_AFTER = dt.datetime(2045, 1, 1, tzinfo=dt.UTC)
"""End of every derived CA's validity (20 years; kubeadm's own CA lasts 10)."""

ADMIN_CERT_DAYS = 400
"""Validity of the admin client certificate, from the first day of the month it was
built in (so there is always at least a month of overlap when it rolls over)."""

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "kubeadm:cluster-admins"
"""kubeadm (>= 1.29) binds this group to ``cluster-admin``; unlike ``system:masters`` it
can be revoked by deleting the ClusterRoleBinding."""

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def new_seed() -> str:
    """A fresh random seed: 64 hex digits (256 bits) from :mod:`secrets`."""
    return secrets.token_hex(32)


def check_seed(seed: str) -> str:
    """Return ``seed`` if it is long enough to be a secret seed.

    Raises:
        ValueError: Shorter than :data:`SEED_MIN_LENGTH` characters.
    """
    if len(seed) < SEED_MIN_LENGTH:
        raise ValueError(
            f"a secret seed needs at least {SEED_MIN_LENGTH} characters (got {len(seed)}); "
            "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return seed


def derive_bytes(seed: str, purpose: str, length: int = 32) -> bytes:
    """``length`` bytes of HKDF-SHA256 output for ``purpose`` (domain-separated)."""
    check_seed(seed)
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"infragym/v1", info=purpose.encode()
    ).derive(seed.encode())


def derive_uuid(seed: str, purpose: str) -> str:
    """A random-looking (version 4) UUID, as Consul and Nomad use for token secrets."""
    return str(uuid.UUID(bytes=derive_bytes(seed, purpose, 16), version=4))


def derive_gossip_key(seed: str, purpose: str) -> str:
    """A base64 32-byte key: the format of Consul's ``encrypt`` and Nomad's ``server.encrypt``."""
    return base64.b64encode(derive_bytes(seed, purpose, 32)).decode()


def derive_kubeadm_token(seed: str, purpose: str = "kubeadm-bootstrap-token") -> str:
    """A kubeadm bootstrap token, ``[a-z0-9]{6}.[a-z0-9]{16}``.

    Two derived bytes per character keep the modulo bias below 0.1 %.
    """
    raw = derive_bytes(seed, purpose, 44)
    chars = [
        _TOKEN_ALPHABET[int.from_bytes(raw[i : i + 2], "big") % len(_TOKEN_ALPHABET)]
        for i in range(0, 44, 2)
    ]
    return "".join(chars[:6]) + "." + "".join(chars[6:])


def derive_ec_key(seed: str, purpose: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key whose scalar is derived from the seed (48 bytes, so the
    reduction modulo the group order is unbiased in practice)."""
    scalar = int.from_bytes(derive_bytes(seed, purpose, 48), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _serial(seed: str, purpose: str) -> int:
    # A positive serial below 2**159, as RFC 5280 asks (at most 20 octets).
    return int.from_bytes(derive_bytes(seed, purpose, 20), "big") >> 1 or 1


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """A private key as SEC1 PEM (``EC PRIVATE KEY``), the form kubeadm itself writes."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def cert_pem(cert: x509.Certificate) -> str:
    """A certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def discovery_hash(ca_cert_pem: str) -> str:
    """kubeadm's ``--discovery-token-ca-cert-hash``: ``sha256:`` + the hex SHA-256 of the
    CA's DER-encoded SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Digital signatures only, plus certificate and CRL signing for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_cert(seed: str, purpose: str, common_name: str) -> tuple[str, str]:
    key = derive_ec_key(seed, purpose + "/key")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial(seed, purpose + "/serial"))
        .not_valid_before(CA_NOT_BEFORE)
        .not_valid_after(CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return cert_pem(cert), key_pem(key)


@dataclass(frozen=True)
class ClusterPki:
    """The secrets a kubeadm cluster is bootstrapped with.

    Attributes:
        seed: The secret seed everything was derived from.
        ca_cert_pem: The cluster CA certificate (``/etc/kubernetes/pki/ca.crt``).
        ca_key_pem: Its private key (``/etc/kubernetes/pki/ca.key``).
        token: The kubeadm bootstrap token minions join with.
        discovery_hash: ``sha256:<hex>`` pin of the CA public key for ``kubeadm join``.
    """

    seed: str
    ca_cert_pem: str
    ca_key_pem: str
    token: str
    discovery_hash: str

    def admin_cert(self, now: dt.datetime | None = None) -> tuple[str, str]:
        """An admin client certificate and key signed by the CA.

        Args:
            now: The time the certificate is built at (default: now, UTC); its validity
                starts on the first day of that month.

        Returns:
            ``(certificate PEM, key PEM)``.
        """
        now = now or dt.datetime.now(dt.UTC)
        start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        period = start.strftime("%Y-%m")
        ca = x509.load_pem_x509_certificate(self.ca_cert_pem.encode())
        ca_key = serialization.load_pem_private_key(self.ca_key_pem.encode(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = derive_ec_key(self.seed, f"kubernetes-admin/key/{period}")
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                        x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
                    ]
                )
            )
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(_serial(self.seed, f"kubernetes-admin/serial/{period}"))
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=ADMIN_CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        return cert_pem(cert), key_pem(key)

    def admin_kubeconfig(
        self, server: str, cluster_name: str, now: dt.datetime | None = None
    ) -> str:
        """A kubeconfig for the admin user: the CA pinned, a client certificate inline.

        Args:
            server: API server URL, for example ``https://203.0.113.10:6443``.
            cluster_name: Name of the cluster, context and user entries.
            now: Build time (see :meth:`admin_cert`).
        """
        cert, key = self.admin_cert(now)
        user = f"{cluster_name}-admin"

        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": b64(self.ca_cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
                }
            ],
            "contexts": [
                {"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}
            ],
            "current-context": cluster_name,
            "preferences": {},
        }
        return yaml.safe_dump(config, sort_keys=False)


def cluster_pki(seed: str) -> ClusterPki:
    """Derive a kubeadm cluster's CA, bootstrap token and discovery hash from ``seed``.

    The same seed always gives the same values (byte for byte), so ``pulumi up`` can be
    rerun without replacing the droplets that carry them.
    """
    ca_cert, ca_key = _ca_cert(seed, "kubernetes-ca", "kubernetes")
    return ClusterPki(
        seed=seed,
        ca_cert_pem=ca_cert,
        ca_key_pem=ca_key,
        token=derive_kubeadm_token(seed),
        discovery_hash=discovery_hash(ca_cert),
    )
