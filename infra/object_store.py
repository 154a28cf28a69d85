"""S3 client construction from Settings (SeaweedFS in the embedded stack, MinIO/AWS elsewhere)."""
from __future__ import annotations

from collections.abc import Iterable

import urllib3
from minio import Minio
from minio.error import S3Error

from infra.settings import Settings, with_dev_s3_credentials

# Bucket names S3 itself reports as "already there" when two creators race.
_ALREADY_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


def _http_client(connect_timeout: float, read_timeout: float, retries: int) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=16,
        retries=urllib3.Retry(
            total=retries,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
            allowed_methods=None,  # S3 PUTs are idempotent per key; retry them too
        ),
    )


def object_store(
    settings: Settings,
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    retries: int = 3,
) -> Minio:
    """A Minio client for ``settings.s3_endpoint``; short timeouts/no retries suit health probes.

    Dev settings with the default credentials use the embedded stack's generated ones (from the data
    dir), so a Settings object made before the stack generated them still reaches its S3."""
    settings = with_dev_s3_credentials(settings)
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=_http_client(connect_timeout, read_timeout, retries),
    )


def ensure_buckets(client: Minio, names: Iterable[str]) -> list[str]:
    """Create the missing buckets; returns the names that were created now."""
    created: list[str] = []
    for name in dict.fromkeys(names):  # dedupe, keep order
        if client.bucket_exists(name):
            continue
        try:
            client.make_bucket(name)
        except S3Error as error:
            if error.code not in _ALREADY_EXISTS:
                raise
            continue
        created.append(name)
    return created


def app_buckets(settings: Settings) -> list[str]:
    """Every bucket vitrina expects to exist."""
    return [settings.media_bucket, settings.models_bucket, settings.broker_bucket]
