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

import contextlib
import os
from pathlib import Path
from urllib.parse import urlparse

from feast_bc.errors import ConcurrentChangeError, ConfigurationError, ObjectStoreError

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
    @contextlib.contextmanager
    def _errors(self, action: str, *, conditional: bool = False):
        """Turn botocore's exceptions into one-line feast_bc errors naming the location and the fix."""
        from botocore import exceptions as bx

        where = f"{self.uri} ({'endpoint ' + endpoint() if endpoint() else 'AWS S3'})"
        try:
            yield
        except bx.NoCredentialsError:
            raise ObjectStoreError(
                f"{where}: no credentials -- set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError) as exc:
            raise ObjectStoreError(
                f"{where}: cannot reach the object store to {action} ({exc}); check AWS_ENDPOINT_URL and "
                "that the server is running"
            ) from None
        except bx.ClientError as exc:
            raise _client_error(where, action, conditional, self.bucket, exc) from None
        except bx.BotoCoreError as exc:
            raise ObjectStoreError(f"{where}: {action} failed: {exc}") from None


def _client_error(where: str, action: str, conditional: bool, bucket: str, exc) -> Exception:
    """The feast_bc error of an S3 error response."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if conditional and code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
        return ConcurrentChangeError(
            f"{where}: {action} lost a race -- another writer changed it since this command read it; "
            "nothing of this command is served. Run it again"
        )
    if code == "NoSuchBucket":
        return ObjectStoreError(f"{where}: bucket {bucket!r} does not exist -- create it, or fix the catalog URI")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
        return ObjectStoreError(
            f"{where}: the object store refused the credentials to {action} ({code}) -- check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
        )
    if code in ("404", "NoSuchKey"):
        return ObjectStoreError(
            f"{where}: {action}: the object is gone (deleted while this command ran?); run it again"
        )
    return ObjectStoreError(f"{where}: {action} failed: {code or exc}")
