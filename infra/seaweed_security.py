"""SeaweedFS's ``security.toml`` for the embedded S3: JWT keys, mutual TLS on gRPC and HTTPS.

At every start of the embedded S3 (``infra/stack.py``) a throwaway CA and one EC P-256 certificate per
component are generated into ``<data_dir>/s3/tls`` (files 0600, folder 0700); the CA's private key is
never written, so no other certificate can be issued for this stack. With them:

* gRPC of master, volume, filer and S3 gateway (and the unix sockets weed adds in /tmp for its own
  calls) accepts only clients with a certificate of that CA and a known common name (mutual TLS);
* the HTTP ports of master, volume and filer speak HTTPS only and require such a client certificate:
  an anonymous local process gets no ``/dir/assign``, ``/dir/lookup``, ``/vol/grow``, ``/cluster/status``;
* on top, the volume servers answer reads and writes only with a JWT signed by master or filer, and the
  filer's HTTP API only with a JWT of the filer key (random keys, new at every start).

The S3 port itself stays plain HTTP on 127.0.0.1 and requires the SigV4 credentials (see
``infra/secrets.py``): it is the only door meant for clients. Certificates and keys are readable by the
user that runs the stack: a process of that same user can use them (as it can read the data).
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from pathlib import Path

# components with a certificate: the servers weed runs, and "client" for tools dialing them
SEAWEED_COMPONENTS = ("master", "volume", "filer", "s3")
CLIENT = "client"
_COMMON_NAME_PREFIX = "vitrina-seaweed-"


def common_name(component: str) -> str:
    return f"{_COMMON_NAME_PREFIX}{component}"


def write_tls_material(folder: Path) -> Path:
    """A fresh CA certificate (``ca.crt``) and ``<component>.crt``/``.key`` for each component and the
    client, all 0600 in ``folder`` (0700); returns ``folder``. Takes a few milliseconds (EC keys)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1), "not_valid_after": now + datetime.timedelta(days=3650)}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{_COMMON_NAME_PREFIX}ca-{secrets.token_hex(4)}")])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    _write_private(folder / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    for component in (*SEAWEED_COMPONENTS, CLIENT):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name(component))]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(names, critical=False)
                .add_extension(usage, critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write_private(folder / f"{component}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write_private(folder / f"{component}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder


def seaweed_security_toml(tls: Path | None = None) -> str:
    """The ``security.toml`` text: fresh random JWT keys; with ``tls`` (a folder from
    ``write_tls_material``) also mutual TLS for gRPC and HTTPS with client certificates for the HTTP
    ports of master, volume and filer (weed's own calls between them use the ``client``/component certs)."""
    keys = {name: secrets.token_urlsafe(32) for name in ("signing", "signing.read", "filer_signing",
                                                          "filer_signing.read")}
    text = "".join(f'[jwt.{name}]\nkey = "{key}"\nexpires_after_seconds = 10\n\n' for name, key in keys.items())
    if tls is None:
        return text
    allowed = ",".join(common_name(c) for c in (*SEAWEED_COMPONENTS, CLIENT))
    text += f'[grpc]\nca = {_q(tls / "ca.crt")}\n\n'
    for component in SEAWEED_COMPONENTS:
        text += (f'[grpc.{component}]\ncert = {_q(tls / f"{component}.crt")}\nkey = {_q(tls / f"{component}.key")}\n'
                 f'allowed_commonNames = "{allowed}"\n\n')
    text += f'[grpc.client]\ncert = {_q(tls / "client.crt")}\nkey = {_q(tls / "client.key")}\n\n'
    text += (f'[https.client]\nenabled = true\ncert = {_q(tls / "client.crt")}\nkey = {_q(tls / "client.key")}\n'
             f'ca = {_q(tls / "ca.crt")}\n\n')
    for component in ("master", "volume", "filer"):  # ca: client certificates are required and verified
        text += (f'[https.{component}]\ncert = {_q(tls / f"{component}.crt")}\nkey = {_q(tls / f"{component}.key")}\n'
                 f'ca = {_q(tls / "ca.crt")}\n\n')
    return text


def _q(path: Path) -> str:
    return json.dumps(str(path))  # a TOML basic string (same escapes as JSON)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)
