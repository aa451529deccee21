"""The object store under a remote catalog: list, get, put (conditionally) and delete objects.

One small client over boto3 (the ``s3`` extra: ``pip install 'feast-bc[s3]'``), so every error a
user can cause -- an unreachable endpoint, a missing bucket, refused credentials, a write that lost
a race -- becomes one :class:`~feast_bc.errors.ObjectStoreError` line naming the location and the
fix. Credentials, region and endpoint come from the usual AWS configuration: ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` (or ``AWS_PROFILE``, ``~/.aws``), ``AWS_REGION`` and, for an
S3-compatible server (MinIO, Ceph, moto), ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``.

Concurrency rests on S3's conditional writes (``If-Match`` / ``If-None-Match``, which S3, MinIO
and moto implement): a manifest is replaced only if it is still the object this writer read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from feast_bc.errors import ConcurrentChangeError, ConfigurationError, ObjectStoreError

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("s3",)


def is_uri(location: str) -> bool:
    return "://" in str(location)


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot name a catalog (None when it can)."""
    parsed = urlparse(uri)
    if parsed.scheme not in SUPPORTED_SCHEMES:
        return (
            f"{uri!r}: feast_bc reads catalogs on a local filesystem or on S3-compatible object storage "
            f"(s3://bucket/prefix), not {parsed.scheme}://"
        )
    if not parsed.netloc:
        return f"{uri!r} names no bucket: write s3://bucket/prefix"
    return None


def endpoint() -> str | None:
    """The S3 endpoint boto3 will use (None: AWS's own)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


class ObjectStore:
    """The objects under one ``s3://bucket/prefix``, addressed by keys relative to the prefix."""

    def __init__(self, uri: str):
        problem = uri_problem(uri)
        if problem:
            raise ConfigurationError(problem)
        parsed = urlparse(uri)
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client = None

    def __repr__(self) -> str:
        return f"ObjectStore({self.uri!r})"

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def url(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    @property
    def client(self):
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise ConfigurationError(
                    f"{self.uri}: a catalog on object storage needs boto3 -- pip install 'feast-bc[s3]'"
                ) from None
            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
            self._client = boto3.client("s3", config=config)
        return self._client

    # ------------------------------------------------------------------------------ operations
    def list(self) -> dict[str, str]:
        """Relative key -> ETag of every object under the prefix (one request per 1,000 objects)."""
        out: dict[str, str] = {}
        base = f"{self.prefix}/" if self.prefix else ""
        with self._errors("list"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", ()):
                    out[obj["Key"][len(base) :]] = obj["ETag"].strip('"')
        return out

    def download(self, rel: str, path: Path) -> None:
        """Write object ``rel`` to ``path`` (the caller makes it atomic)."""
        with self._errors(f"read {rel}"):
            self.client.download_file(self.bucket, self.key(rel), str(path))

    def upload(self, rel: str, path: Path) -> None:
        """Upload an immutable file (multipart above boto3's threshold)."""
        with self._errors(f"write {rel}"):
            self.client.upload_file(str(path), self.bucket, self.key(rel))

    def put(self, rel: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write a small object in one request; with ``if_match`` (an ETag) or ``if_absent`` only if
        the object is still that one / still absent. Returns the new ETag."""
        kwargs = {"Bucket": self.bucket, "Key": self.key(rel), "Body": data}
        if if_match is not None:
            kwargs["IfMatch"] = f'"{if_match}"'
        elif if_absent:
            kwargs["IfNoneMatch"] = "*"
        with self._errors(f"write {rel}", conditional=if_match is not None or if_absent):
            return self.client.put_object(**kwargs)["ETag"].strip('"')

    def delete(self, rels: list[str]) -> None:
        for start in range(0, len(rels), 1000):
            chunk = [{"Key": self.key(r)} for r in rels[start : start + 1000]]
            with self._errors("delete"):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    # ------------------------------------------------------------------------------ errors
    def _errors(self, action: str, *, conditional: bool = False):
        return _ErrorMapper(self, action, conditional)


class _ErrorMapper:
    """Turns botocore's exceptions into one-line feast_bc errors naming the location and the fix."""

    def __init__(self, store: ObjectStore, action: str, conditional: bool):
        self.store, self.action, self.conditional = store, action, conditional

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            return False
        try:
            from botocore import exceptions as bx
        except ImportError:  # pragma: no cover - boto3 import failed earlier with its own message
            return False
        where = f"{self.store.uri} ({'endpoint ' + endpoint() if endpoint() else 'AWS S3'})"
        if isinstance(exc, bx.NoCredentialsError):
            raise ObjectStoreError(
                f"{where}: no credentials -- set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)):
            raise ObjectStoreError(
                f"{where}: cannot reach the object store to {self.action} ({exc}); check AWS_ENDPOINT_URL and "
                "that the server is running"
            ) from None
        if isinstance(exc, bx.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if self.conditional and code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ConcurrentChangeError(
                    f"{where}: {self.action} lost a race -- another writer changed it since this command read it; "
                    "nothing of this command is served. Run it again"
                ) from None
            if code == "NoSuchBucket":
                raise ObjectStoreError(
                    f"{where}: bucket {self.store.bucket!r} does not exist -- create it, or fix the catalog URI"
                ) from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
                raise ObjectStoreError(
                    f"{where}: the object store refused the credentials to {self.action} ({code}) -- check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
                ) from None
            if code in ("404", "NoSuchKey"):
                raise ObjectStoreError(
                    f"{where}: {self.action}: the object is gone (deleted while this command ran?); run it again"
                ) from None
            raise ObjectStoreError(f"{where}: {self.action} failed: {code or exc}") from None
        if isinstance(exc, bx.BotoCoreError):
            raise ObjectStoreError(f"{where}: {self.action} failed: {exc}") from None
        return False
