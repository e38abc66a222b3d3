"""A throw-away PKI for the TLS tests, made with the ``cryptography`` package: a CA, a server
certificate for 127.0.0.1 and localhost, one for another host name, one that has expired, and a
second CA nobody trusts with a certificate of its own. RFC 5280-clean (key identifiers, key
usage, basic constraints), as Python 3.13's strict verification wants.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import List, Optional, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Name = Union[str, ipaddress.IPv4Address]
_NOW = datetime.datetime.now(datetime.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rts_sync tests")])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    """A self-signed certificate authority."""

    def __init__(self, cn: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(days=1))
            .not_valid_after(_NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256()))

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, names: List[Name], expired: bool = False) -> Tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a server certificate for ``names``."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: List[x509.GeneralName] = [
            x509.IPAddress(n) if isinstance(n, ipaddress.IPv4Address) else x509.DNSName(n)
            for n in names]
        start, end = ((_NOW - datetime.timedelta(days=10), _NOW - datetime.timedelta(days=1))
                      if expired else (_NOW - datetime.timedelta(days=1),
                                       _NOW + datetime.timedelta(days=30)))
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder().subject_name(_name(str(names[0])))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


class PKI:
    """The files of the test PKI, in ``directory``; each pair is (certificate file, key file)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        ca, rogue_ca = CA("rts_sync test CA"), CA("a CA nobody trusts")
        loopback = [ipaddress.IPv4Address("127.0.0.1"), "localhost"]
        self.ca_file = self._write("ca.pem", ca.pem())
        self.good = self._pair("server", ca.issue(loopback))
        self.wrong_host = self._pair("other-host", ca.issue(["other.example"]))
        self.expired = self._pair("expired", ca.issue(loopback, expired=True))
        self.untrusted = self._pair("untrusted", rogue_ca.issue(loopback))
        self.not_pem = self._write("not-a-cert.pem", b"hello\n")

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def _pair(self, name: str, pems: Tuple[bytes, bytes],
              key_name: Optional[str] = None) -> Tuple[str, str]:
        return (self._write(name + ".crt", pems[0]),
                self._write((key_name or name) + ".key", pems[1]))
