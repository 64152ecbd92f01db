"""Local TLS and SuperNode-authentication keys for a Flower deployment on this machine.

`write_tls` makes a private certificate authority and a SuperLink certificate for
``127.0.0.1`` / ``localhost`` signed by it (ECDSA P-256): ``ca.pem`` goes to every SuperNode
(``--root-certificates``) and to ``flwr`` (``root-certificates`` of the SuperLink connection);
``superlink.pem`` / ``superlink.key`` to ``flower-superlink --ssl-certfile / --ssl-keyfile``
(with ``--ssl-ca-certfile ca.pem``). `check_tls` refuses files that are missing, not PEM, or do not
belong together. `write_node_keys` makes each SuperNode's key pair in the OpenSSH format flwr 1.42
reads (ECDSA P-384): the public key is registered with ``flwr supernode register``, the private
key is the SuperNode's ``--auth-supernode-private-key``. Loopback only: not for a real network.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedmllm.errors import UserError

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass(frozen=True)
class TlsFiles:
    """The SuperLink's TLS files: the CA certificate, its certificate and its private key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_folder(cls, folder: str | Path) -> "TlsFiles":
        """The file names `write_tls` uses, in ``folder``."""
        folder = Path(folder)
        return cls(folder / "ca.pem", folder / "superlink.pem", folder / "superlink.key")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    path.chmod(0o600)


def write_tls(folder: str | Path, days: int = 7) -> TlsFiles:
    """A CA and a SuperLink certificate for 127.0.0.1 / localhost, valid ``days`` days, in ``folder``."""
    files = TlsFiles.in_folder(folder)
    files.ca.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fedmllm local CA")).issuer_name(_name("fedmllm local CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(LOOPBACK)])
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(sans, critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key, key, serialization.PrivateFormat.PKCS8)
    return files


def _load(path: Path, what: str, loader):
    if not path.is_file():
        raise UserError(f"TLS {what} {path} does not exist")
    try:
        return loader(path.read_bytes())
    except (ValueError, TypeError) as e:
        raise UserError(f"TLS {what} {path} is not a PEM {what} ({str(e).splitlines()[0] if str(e) else e})") from None


def check_tls(files: TlsFiles) -> None:
    """Refuse TLS files that are missing, not PEM, or mismatched: the key must be the
    certificate's, the certificate issued by the CA and valid now for 127.0.0.1."""
    ca = _load(files.ca, "CA certificate", x509.load_pem_x509_certificate)
    cert = _load(files.cert, "certificate", x509.load_pem_x509_certificate)
    key = _load(files.key, "private key", lambda b: serialization.load_pem_private_key(b, password=None))
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, spki) != \
            cert.public_key().public_bytes(serialization.Encoding.PEM, spki):
        raise UserError(f"TLS private key {files.key} does not belong to the certificate {files.cert}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise UserError(f"TLS certificate {files.cert} is not issued by the CA {files.ca}") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UserError(f"TLS certificate {files.cert} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} "
                        f"to {cert.not_valid_after_utc:%Y-%m-%d})")
    try:
        ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.IPAddress)
    except x509.ExtensionNotFound:
        ips = []
    if LOOPBACK not in ips:
        raise UserError(f"TLS certificate {files.cert} is not for 127.0.0.1 (no IP:127.0.0.1 subject alternative name)")


def write_node_keys(folder: str | Path, count: int) -> list[tuple[Path, Path]]:
    """``count`` SuperNode key pairs ``node-<i>`` (private) and ``node-<i>.pub`` (public), OpenSSH format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = folder / f"node-{i}", folder / f"node-{i}.pub"
        _write_key(private, key, serialization.PrivateFormat.OpenSSH)
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH))
        pairs.append((private, public))
    return pairs
