"""A local S3-compatible server for the tests: moto's standalone server on a free loopback port.

``$FEAST_BC_TEST_S3_ENDPOINT`` (set by ``.ci/run``, which starts one server for the whole run)
wins; otherwise each pytest worker starts its own ``moto_server`` and stops it by PID. moto keeps
objects in memory and implements S3's conditional writes (``If-Match`` / ``If-None-Match``), which
is what feast_bc's remote catalog relies on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from local_redis import free_port

ENDPOINT_ENV_VAR = "FEAST_BC_TEST_S3_ENDPOINT"
#: What a client needs besides the endpoint (moto accepts any key pair).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "feastbc", "AWS_SECRET_ACCESS_KEY": "feastbc-secret", "AWS_REGION": "us-east-1"}


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class LocalS3:
    """One moto server process owned by whoever started it."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalS3:
        self.port = free_port()
        exe = Path(sys.executable).parent / "moto_server"
        log = open(self.workdir / f"moto-{self.port}.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log, env=self.env
        )
        log.close()
        deadline = time.monotonic() + 30
        while not _reachable(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start on port {self.port} (see {self.workdir})")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


def client_env(endpoint: str) -> dict[str, str]:
    """The environment a process needs to reach ``endpoint`` (what a user exports)."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}


def new_bucket(endpoint: str, credentials: dict[str, str] | None = None) -> str:
    """A fresh bucket on ``endpoint`` (unique per test, like a Feast project); ``credentials``
    default to the tests' (a server not started here may have its own)."""
    import boto3

    keys = {**CREDENTIALS, **(credentials or {})}
    name = f"bc-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        region_name=keys["AWS_REGION"],
    )
    client.create_bucket(Bucket=name)
    return name
