"""Local Redis processes shared by the tests and the benchmarks (stdlib + redis-py, no pytest).

:class:`LocalRedisCluster` starts three ``redis-server`` masters in cluster mode (no replicas, no
persistence) on free loopback ports, joins them with ``redis-cli --cluster create`` and stops them
by PID. ``tests/test_redis_cluster.py`` extends it with slot migrations;
``benchmarks/materialize_family.py`` uses it as it is.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedisCluster:
    """Three redis-server masters in cluster mode, owned by whoever started them."""

    def __init__(self, workdir: Path, masters: int = 3):
        self.workdir = Path(workdir)
        self.masters = masters
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []

    def start(self) -> LocalRedisCluster:
        used: set[int] = set()
        for _ in range(self.masters):
            port, bus = self._port(used), self._port(used)
            log = open(self.workdir / f"redis-{port}.log", "wb")  # noqa: SIM115 - closed with the process
            args = [
                "redis-server",
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus),
                "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "no",
                "--bind", "127.0.0.1",
                "--daemonize", "no",
            ]  # fmt: skip
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            log.close()
            self.ports.append(port)
        for port in self.ports:
            self._wait(lambda p=port: self.client(p).ping(), f"redis-server on port {port} did not start")
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._wait(self._all_ok, "the cluster did not reach cluster_state:ok")
        return self

    @staticmethod
    def _port(used: set[int]) -> int:
        while True:
            port = free_port()
            if port not in used:
                used.add(port)
                return port

    @staticmethod
    def _wait(check, message: str, seconds: float = 30) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                if check():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.1)
        raise RuntimeError(message)

    def _all_ok(self) -> bool:
        return all(b"cluster_state:ok" in self.client(p).execute_command("CLUSTER", "INFO") for p in self.ports)

    def client(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port)

    @property
    def connection_string(self) -> str:
        """Feast's ``connection_string`` for ``redis_type: redis_cluster``."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
