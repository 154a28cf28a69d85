"""The embedded S3 serves no anonymous local process (issue 13).

SeaweedFS runs with generated S3 credentials (infra/secrets.py), JWT keys, mutual TLS on gRPC and HTTPS
with client certificates on the master, volume and filer HTTP ports (infra/seaweed_security.py). An
anonymous client on the same machine gets refused on every port; the stack's own clients (and a client
holding the stack's certificate, as the positive control) get through.
"""
from __future__ import annotations

import dataclasses
import http.client
import io
import ssl
import uuid
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from infra import settings as settings_module
from infra.object_store import app_buckets, object_store
from infra.seaweed_security import write_tls_material
from infra.settings import Settings
from infra.stack import S3_INTERNAL_PORTS, EmbeddedStack

# gRPC methods that take an empty request, one per server (the positive control calls them)
_GRPC_METHODS = {
    "master.grpc": "/master_pb.Seaweed/GetMasterConfiguration",
    "volume.grpc": "/volume_server_pb.VolumeServer/VolumeServerStatus",
    "filer.grpc": "/filer_pb.SeaweedFiler/GetFilerConfiguration",
    "s3.grpc": "/messaging_pb.SeaweedMessaging/FindBrokerLeader",  # any name: the refusal comes first
}


@pytest.fixture(scope="module")
def seaweed(embedded_stack: EmbeddedStack | None, stack: Settings) -> tuple[Settings, Path]:
    """The session stack's settings and the folder of its certificates."""
    if embedded_stack is None:
        pytest.skip("the lockdown is the embedded SeaweedFS's; an external stack brings its own")
    return stack, embedded_stack.data_dir / "s3" / "tls"


def _port(settings: Settings, name: str) -> int:
    return settings.s3_port + S3_INTERNAL_PORTS[name]


# ---------------------------------------------------------------------- S3


def test_s3_refuses_requests_without_the_generated_credentials(seaweed: tuple[Settings, Path]) -> None:
    settings, _ = seaweed
    assert (settings.s3_access_key, settings.s3_secret_key) != (settings_module.DEV_S3_ACCESS_KEY,
                                                                 settings_module.DEV_S3_SECRET_KEY)
    owner = object_store(settings, retries=0)
    anonymous = Minio(settings.s3_endpoint, secure=False, region=settings.s3_region)
    published = Minio(settings.s3_endpoint, access_key=settings_module.DEV_S3_ACCESS_KEY,
                      secret_key=settings_module.DEV_S3_SECRET_KEY, secure=False, region=settings.s3_region)
    wrong_secret = Minio(settings.s3_endpoint, access_key=settings.s3_access_key, secret_key="not-the-secret",
                         secure=False, region=settings.s3_region)
    key = f"lockdown/{uuid.uuid4().hex}.bin"
    with pytest.raises(S3Error):
        anonymous.list_buckets()
    for bucket in app_buckets(settings):
        owner.put_object(bucket, key, io.BytesIO(b"private"), 7)
        try:
            for intruder in (anonymous, published, wrong_secret):
                for attempt in (lambda c=intruder, b=bucket: c.get_object(b, key).read(),
                                lambda c=intruder, b=bucket: list(c.list_objects(b, prefix="lockdown/")),
                                lambda c=intruder, b=bucket: c.put_object(b, f"{key}.planted", io.BytesIO(b"evil"), 4),
                                lambda c=intruder, b=bucket: c.remove_object(b, key)):
                    with pytest.raises(S3Error) as refused:
                        attempt()
                    assert refused.value.code in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"), (
                        bucket, refused.value.code)
            assert owner.get_object(bucket, key).read() == b"private"  # still there, nothing planted
            assert [o.object_name for o in owner.list_objects(bucket, prefix=key)] == [key]
        finally:
            owner.remove_object(bucket, key)


def test_clients_of_the_stack_find_the_generated_credentials_in_the_data_dir(seaweed: tuple[Settings, Path]) -> None:
    """A process given only the data dir (default credentials) reaches S3 with the generated ones."""
    settings, _ = seaweed
    plain = dataclasses.replace(settings, s3_access_key=settings_module.DEV_S3_ACCESS_KEY,
                                s3_secret_key=settings_module.DEV_S3_SECRET_KEY)
    resolved = settings_module.with_dev_secrets(plain)
    assert (resolved.s3_access_key, resolved.s3_secret_key) == (settings.s3_access_key, settings.s3_secret_key)
    assert object_store(plain, retries=0).bucket_exists(settings.media_bucket)  # object_store resolves them too


# ---------------------------------------------------------------------- master, volume, filer HTTP


def _https(port: int, path: str, context: ssl.SSLContext, method: str = "GET", body: bytes | None = None) -> int:
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        connection.request(method, path, body=body)
        return connection.getresponse().status
    finally:
        connection.close()


def _http(port: int, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize("name, path, method", [
    ("master", "/dir/assign", "GET"),
    ("master", "/dir/lookup?volumeId=1", "GET"),
    ("master", "/vol/grow?count=1", "GET"),
    ("master", "/cluster/status", "GET"),
    ("volume", "/status", "GET"),
    ("volume", "/1,0123456789", "POST"),
    ("filer", "/buckets/?pretty=y", "GET"),
    ("filer", "/buckets/media/lockdown/planted.bin", "POST"),
])
def test_master_volume_and_filer_http_refuse_a_client_without_the_stack_certificate(
        seaweed: tuple[Settings, Path], name: str, path: str, method: str, tmp_path: Path) -> None:
    settings, tls = seaweed
    port = _port(settings, name)
    body = b"evil" if method == "POST" else None
    status, text = _http(port, path, method, body)  # plain HTTP: the port speaks TLS only
    assert status == 400 and b"HTTPS" in text, (status, text[:200])
    stranger = write_tls_material(tmp_path / "stranger")  # a certificate of another CA
    for client_cert in (None, stranger / "client.crt"):
        context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        context.check_hostname = False
        if client_cert is not None:
            context.load_cert_chain(client_cert, stranger / "client.key")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https(port, path, context, method, body)
    # the control: the same request with the stack's client certificate gets past TLS
    context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(tls / "client.crt", tls / "client.key")
    assert _https(port, "/dir/assign" if name == "master" else "/", context) in (200, 401, 404)


def _unix_http_status(path: Path, request: bytes) -> int:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(request)
        return int(client.recv(4096).split(b" ", 2)[1])


def test_weeds_http_unix_sockets_need_the_jwt_or_the_s3_keys(seaweed: tuple[Settings, Path]) -> None:
    """weed also serves the filer's and the S3 gateway's HTTP on unix sockets in /tmp (for its own
    calls; writable by the stack's user only): without TLS there, but the filer wants its JWT and S3
    its SigV4 keys."""
    settings, _ = seaweed
    filer = Path(f"/tmp/seaweedfs-filer-{_port(settings, 'filer')}.sock")
    s3 = Path(f"/tmp/seaweedfs-s3-{settings.s3_port}.sock")
    assert filer.exists() and s3.exists(), "weed (pinned in constraints.txt) opens these sockets: where did they go?"
    for socket_path in (filer, s3):
        assert socket_path.stat().st_mode & 0o002 == 0  # other users may not connect
    assert _unix_http_status(filer, b"GET /buckets/?pretty=y HTTP/1.0\r\n\r\n") == 401
    assert _unix_http_status(filer, b"POST /buckets/media/lockdown/planted.bin HTTP/1.0\r\n"
                                    b"Content-Length: 4\r\n\r\nevil") == 401
    assert _unix_http_status(s3, f"GET /{settings.media_bucket}/ HTTP/1.0\r\n\r\n".encode()) == 403
    assert _unix_http_status(s3, f"PUT /{settings.media_bucket}/lockdown/planted.bin HTTP/1.0\r\n"
                                 f"Content-Length: 4\r\n\r\nevil".encode()) == 403


# ---------------------------------------------------------------------- gRPC


def _grpc_call(target: str, method: str, credentials: object | None) -> object:
    import grpc

    options = [("grpc.ssl_target_name_override", "localhost"), ("grpc.enable_retries", 0)]
    channel = (grpc.insecure_channel(target, options=options) if credentials is None
               else grpc.secure_channel(target, credentials, options=options))
    try:
        return channel.unary_unary(method)(b"", timeout=10)
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()


@pytest.mark.parametrize("name", sorted(_GRPC_METHODS))
def test_grpc_ports_require_mutual_tls(seaweed: tuple[Settings, Path], name: str, tmp_path: Path) -> None:
    import grpc  # grpcio: installed with tensorflow, a dependency

    settings, tls = seaweed
    ca = (tls / "ca.crt").read_bytes()
    stranger = write_tls_material(tmp_path / "stranger")
    port = _port(settings, name)
    targets = [f"127.0.0.1:{port}"]
    component = name.split(".")[0]
    socket_path = Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock")  # weed's own local shortcut
    if socket_path.exists():
        targets.append(f"unix://{socket_path}")
    refusals = {
        "plaintext": None,
        "TLS without a client certificate": grpc.ssl_channel_credentials(ca),
        "a client certificate of another CA": grpc.ssl_channel_credentials(
            ca, (stranger / "client.key").read_bytes(), (stranger / "client.crt").read_bytes()),
    }
    for target in targets:
        for how, credentials in refusals.items():
            assert _grpc_call(target, _GRPC_METHODS[name], credentials) == grpc.StatusCode.UNAVAILABLE, (target, how)
    if name != "s3.grpc":  # the control: the stack's client certificate gets an answer
        mutual = grpc.ssl_channel_credentials(ca, (tls / "client.key").read_bytes(), (tls / "client.crt").read_bytes())
        answer = _grpc_call(targets[0], _GRPC_METHODS[name], mutual)
        assert isinstance(answer, bytes), answer


# ---------------------------------------------------------------------- generated once, dev only


def test_s3_credentials_are_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    from infra.secrets import (
        ensure_dev_s3_credentials,
        ensure_dev_secrets,
        record_dev_s3_credentials,
    )
    from infra.settings import with_dev_secrets

    plain = dataclasses.replace(settings_module.Settings(), data_dir=tmp_path, env="dev",
                                s3_access_key=settings_module.DEV_S3_ACCESS_KEY,
                                s3_secret_key=settings_module.DEV_S3_SECRET_KEY,
                                redis_url="redis://127.0.0.1:16379/0")
    assert with_dev_secrets(plain) == plain  # nothing generated yet
    secured = ensure_dev_s3_credentials(plain)
    assert len(secured.s3_access_key) == 20 and len(secured.s3_secret_key) >= 40
    path = tmp_path / "secrets" / "s3-credentials"
    assert path.stat().st_mode & 0o077 == 0
    assert ensure_dev_s3_credentials(plain) == secured  # reused, not generated again
    assert with_dev_secrets(plain).s3_secret_key == secured.s3_secret_key  # another process of the stack
    both = ensure_dev_secrets(plain)
    assert both.s3_secret_key == secured.s3_secret_key and "@" in both.redis_url
    given = dataclasses.replace(plain, s3_access_key="given", s3_secret_key="given-secret")
    assert ensure_dev_s3_credentials(given) == given and with_dev_secrets(given).s3_access_key == "given"
    record_dev_s3_credentials(given)  # a stack started with given keys tells its data dir
    assert with_dev_secrets(plain).s3_access_key == "given" and path.stat().st_mode & 0o077 == 0
    production = dataclasses.replace(plain, env="production")
    assert with_dev_secrets(production) == production == ensure_dev_s3_credentials(production)
    record_dev_s3_credentials(dataclasses.replace(given, env="production", s3_access_key="prod"))
    assert with_dev_secrets(plain).s3_access_key == "given"  # production writes nothing

    from api.hardening import InsecureSettingsError, check_production

    with pytest.raises(InsecureSettingsError) as refused:  # production still refuses the defaults
        check_production(dataclasses.replace(production, url_signing_key="k" * 32, jwt_key="j" * 32,
                                             ops_key="o" * 32, redis_url="redis://:pw@127.0.0.1:16379/0"))
    assert refused.value.variables == ["VITRINA_S3_ACCESS_KEY/VITRINA_S3_SECRET_KEY"]
