"""A local PostgreSQL server with pgvector, shared by the tests and the benchmarks (stdlib + psycopg).

Debian 12 packages PostgreSQL but not pgvector; PyPI's ``pgserver`` wheel bundles both (PostgreSQL
16 binaries with ``vector.so``). :class:`LocalPostgres` uses only those binaries: ``initdb`` into a
fresh directory, ``postgres`` listening on a free 127.0.0.1 port, ``CREATE EXTENSION vector``, and
stops the server by PID with SIGINT (PostgreSQL's fast shutdown: open client connections do not
keep it waiting). PostgreSQL refuses to run as root, so under root the server runs as an
unprivileged system user (``postgres`` if it exists, else ``nobody``).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DATABASE = "postgres"
USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pgserver_bin() -> Path:
    """The ``bin`` folder of the PostgreSQL that the ``pgserver`` wheel bundles."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


class LocalPostgres:
    """One PostgreSQL + pgvector server on a free loopback port, owned by whoever started it."""

    def __init__(self) -> None:
        self.bin = pgserver_bin()
        self.user = _run_as()
        self.port = free_port()
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={DATABASE} sslmode=disable"

    def online_store_yaml(self, *, schema: str = "public") -> str:
        """The ``online_store`` block of a Feast profile using this server with pgvector search."""
        return (
            "online_store:\n"
            "  type: postgres\n"
            "  host: 127.0.0.1\n"
            f"  port: {self.port}\n"
            f"  database: {DATABASE}\n"
            f"  db_schema: {schema}\n"
            f"  user: {USER}\n"
            '  password: ""\n'
            "  sslmode: disable\n"
            "  vector_enabled: true\n"
        )

    def write_profile(self, repo: Path, project: str, name: str = "feature_store.postgres.yaml") -> str:
        """A feast_bc profile ``name`` in ``repo`` on this server (its own registry, pgvector on,
        feast_bc's engine); returns its file name."""
        (Path(repo) / name).write_text(
            f"project: {project}\n"
            "provider: local\n"
            "registry:\n  path: data/registry_postgres.db\n  cache_ttl_seconds: 60\n"
            + self.online_store_yaml()
            + "offline_store:\n  type: file\n"
            "batch_engine:\n  type: feast_bc.engine.BCEngine\n"
            "entity_key_serialization_version: 3\n"
        )
        return name

    def start(self) -> LocalPostgres:
        # Not under pytest's tmp dirs: those are private to root, and the server may run as another user.
        self.dir = Path(tempfile.mkdtemp(prefix="feast-bc-pg-"))
        self.dir.chmod(0o755)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        data = self.dir / "data"
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(data), "--auth=trust", "-U", USER, "--encoding=utf8"],
            user=self.user,
            check=True,
            capture_output=True,
        )
        log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.dir)]
            + ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            user=self.user,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready()
        with self.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return self

    def connect(self):
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                psycopg.connect(self.dsn, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        text = (self.dir / "server.log").read_text(errors="replace")[-2000:] if self.dir else ""
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {text}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: does not wait for clients
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
