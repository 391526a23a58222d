"""The hub operator's certificate authority and the broker's certificate, made in Python (the
`cryptography` package): no openssl, no keytool. Kafka reads them as PEM text in its configuration
(`ssl.keystore.type=PEM`, `ssl.keystore.key`, `ssl.keystore.certificate.chain`): a key file would have
to be encrypted, and the JDK 17 the broker runs on cannot read a PKCS#8 key encrypted with PBES2 (the
only scheme `cryptography` writes), so the key stays a private file and goes into the configuration.

    python -m devstack.tls --out deploy/hub/tls --host kafka.hub.example.com

writes `ca.pem` (give it to every service as KAFKA_SSL_CAFILE), `ca.key` (the operator keeps it),
`broker.key` (the broker's key) and `broker.crt` (its certificate), or keeps them where they
already are and still names every host; `--env` prints them as deploy/hub/.env lines."""
import argparse
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS, BROKER_YEARS = 10, 2
# RSA: the broker's JDK 17 failed its own TLS 1.3 self-check with an EC key read from PEM text
# ("Invalid CertificateVerify signature").
KEY_BITS = 2048


@dataclass(frozen=True)
class BrokerTls:
    """Where the files are: what the broker's configuration and the services' settings name."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def key(self) -> Path:
        return self.folder / "broker.key"

    @property
    def chain(self) -> Path:  # the broker's certificate
        return self.folder / "broker.crt"

    def config_values(self) -> dict[str, str]:
        """The broker's key, certificate chain and CA as Kafka's configuration takes them (one line each:
        its PEM parser reads whitespace between the base64 lines as it reads line breaks)."""
        return {"SSL_KEY": one_line(self.key), "SSL_CERTIFICATE_CHAIN": one_line(self.chain), "SSL_CA": one_line(self.ca)}

    def broker_hosts(self) -> set[str]:
        if not self.chain.exists() or not self.key.exists():
            return set()
        cert = x509.load_pem_x509_certificates(self.chain.read_bytes())[0]
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {str(n) for n in names.get_values_for_type(x509.DNSName)} | {
            str(n) for n in names.get_values_for_type(x509.IPAddress)}


def ensure(folder: Path, hosts: list[str]) -> BrokerTls:
    """The CA (made once) and a broker certificate naming every host in `hosts` (made again when one
    is missing, or when it expires within 30 days)."""
    tls = BrokerTls(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not tls.ca.exists() or not tls.ca_key.exists():
        _write(tls.ca_key, _new_ca(tls.ca))
    if not set(hosts) <= tls.broker_hosts() or _expires_soon(tls.chain):
        _new_broker_certificate(tls, hosts)
    return tls


def _new_ca(ca_path: Path) -> bytes:
    """Writes the CA's certificate; answers its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Partner ticket sync hub"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Partner ticket sync hub CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write(ca_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _new_broker_certificate(tls: BrokerTls, hosts: list[str]) -> None:
    ca_cert = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    names = [_san(host) for host in dict.fromkeys(hosts)]
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=365 * BROKER_YEARS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(tls.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    # The broker's certificate alone: on one line Kafka's PEM parser would take a chain's last
    # certificate for its first (its pattern reads from the first BEGIN to the last name on a line), and
    # every client holds the CA anyway.
    _write(tls.chain, cert.public_bytes(serialization.Encoding.PEM), private=False)


def one_line(path: Path) -> str:
    return " ".join(path.read_text().split())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _expires_soon(path: Path) -> bool:
    cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return cert.not_valid_after_utc - datetime.now(UTC) < timedelta(days=30)


def _write(path: Path, data: bytes, private: bool = True) -> None:
    """Written whole or not at all; keys readable by their owner only."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    partial.chmod(0o600 if private else 0o644)
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the folder for the CA and the broker's files")
    parser.add_argument("--host", action="append", required=True,
                        help="a name or address clients reach the broker by (repeatable)")
    parser.add_argument("--env", action="store_true", help="print KAFKA_TLS_KEY and KAFKA_TLS_CERTIFICATE_CHAIN "
                                                           "as lines for deploy/hub/.env")
    args = parser.parse_args()
    tls = ensure(args.out, args.host)
    if args.env:
        values = tls.config_values()
        print(f"KAFKA_TLS_KEY={values['SSL_KEY']}\nKAFKA_TLS_CERTIFICATE_CHAIN={values['SSL_CERTIFICATE_CHAIN']}")
        return
    print(f"CA: {tls.ca} (give it to every service as KAFKA_SSL_CAFILE)\n"
          f"broker: {tls.key} and {tls.chain}, for {', '.join(sorted(tls.broker_hosts()))}")


if __name__ == "__main__":
    main()
