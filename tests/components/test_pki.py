"""The derived cluster PKI: a kubeconfig built from the CA and token verifies against the
CA, the discovery hash pins the CA key, and everything is a pure function of the seed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import uuid

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.do import _pki

SEED = "a1" * 32
NOW = dt.datetime(2026, 5, 17, 12, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pki() -> _pki.ClusterPki:
    return _pki.cluster_pki(SEED)


def _kubeconfig_parts(kubeconfig: str) -> tuple[x509.Certificate, x509.Certificate, str, bytes]:
    """(CA from the cluster entry, client cert, server URL, client key PEM)."""
    config = yaml.safe_load(kubeconfig)
    (cluster,) = config["clusters"]
    (user,) = config["users"]
    (context,) = config["contexts"]
    assert config["current-context"] == context["name"]
    assert context["context"] == {"cluster": cluster["name"], "user": user["name"]}
    ca = x509.load_pem_x509_certificate(
        base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    )
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    key = base64.b64decode(user["user"]["client-key-data"])
    return ca, cert, cluster["cluster"]["server"], key


def test_kubeconfig_client_cert_verifies_against_the_ca(pki: _pki.ClusterPki) -> None:
    kubeconfig = pki.admin_kubeconfig("https://203.0.113.10:6443", "infragym-dev", now=NOW)
    ca_in_config, cert, server, key_pem = _kubeconfig_parts(kubeconfig)
    ca = x509.load_pem_x509_certificate(pki.ca_cert_pem.encode())
    assert server == "https://203.0.113.10:6443"
    assert ca_in_config == ca

    # The signature, checked with the CA's public key.
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    cert.verify_directly_issued_by(ca)
    assert cert.issuer == ca.subject

    # Validity: valid now, and inside the CA's validity.
    assert cert.not_valid_before_utc <= NOW <= cert.not_valid_after_utc
    assert ca.not_valid_before_utc <= cert.not_valid_before_utc
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc
    assert ca.not_valid_before_utc <= dt.datetime.now(dt.UTC) <= ca.not_valid_after_utc

    # A client certificate for the admin group, whose key is the one in the kubeconfig.
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    )
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert org == _pki.ADMIN_GROUP
    client_key = serialization.load_pem_private_key(key_pem, password=None)
    assert client_key.public_key() == cert.public_key()


def test_kubeconfig_built_today_is_valid_today(pki: _pki.ClusterPki) -> None:
    _, cert, _, _ = _kubeconfig_parts(pki.admin_kubeconfig("https://x:6443", "c"))
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now >= dt.timedelta(days=_pki.ADMIN_CERT_DAYS - 31)


def test_discovery_hash_is_sha256_of_the_ca_public_key_info(pki: _pki.ClusterPki) -> None:
    ca = x509.load_pem_x509_certificate(pki.ca_cert_pem.encode())
    spki = ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pki.discovery_hash == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pki.discovery_hash)


def test_ca_is_a_self_signed_ca_matching_its_key(pki: _pki.ClusterPki) -> None:
    ca = x509.load_pem_x509_certificate(pki.ca_cert_pem.encode())
    key = serialization.load_pem_private_key(pki.ca_key_pem.encode(), password=None)
    assert pki.ca_key_pem.startswith("-----BEGIN EC PRIVATE KEY-----")
    assert key.public_key() == ca.public_key()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    ca.verify_directly_issued_by(ca)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes"


def test_bootstrap_token_has_kubeadms_format(pki: _pki.ClusterPki) -> None:
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", pki.token)


def test_same_seed_gives_identical_bytes_other_seed_does_not() -> None:
    a, b = _pki.cluster_pki(SEED), _pki.cluster_pki(SEED)
    assert a == b
    assert a.admin_kubeconfig("https://x:6443", "c", NOW) == b.admin_kubeconfig(
        "https://x:6443", "c", NOW
    )
    c = _pki.cluster_pki("b2" * 32)
    assert (c.ca_key_pem, c.token, c.discovery_hash) != (a.ca_key_pem, a.token, a.discovery_hash)
    assert c.ca_cert_pem != a.ca_cert_pem


def test_admin_cert_rolls_monthly_and_overlaps(pki: _pki.ClusterPki) -> None:
    may = x509.load_pem_x509_certificate(pki.admin_cert(NOW)[0].encode())
    also_may = x509.load_pem_x509_certificate(
        pki.admin_cert(NOW.replace(day=30, hour=23))[0].encode()
    )
    june = x509.load_pem_x509_certificate(pki.admin_cert(NOW.replace(month=6))[0].encode())
    assert may == also_may
    assert june != may
    assert may.not_valid_before_utc == dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    assert may.not_valid_after_utc > june.not_valid_before_utc + dt.timedelta(days=300)


def test_other_derived_secrets_have_their_formats() -> None:
    token = _pki.derive_uuid(SEED, "consul/management")
    assert uuid.UUID(token).version == 4
    assert len(base64.b64decode(_pki.derive_gossip_key(SEED, "consul/gossip"))) == 32
    assert _pki.derive_uuid(SEED, "a") != _pki.derive_uuid(SEED, "b")
    assert len(_pki.new_seed()) == 64 and _pki.new_seed() != _pki.new_seed()


def test_short_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        _pki.cluster_pki("too-short")
