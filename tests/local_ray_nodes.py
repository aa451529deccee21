"""Several Ray nodes on this machine: a head and worker nodes, each a separate ``ray start`` process.

Every node is started with ``--block`` (so its ``ray start`` process owns the node's processes and
stopping it by PID stops the node), on 127.0.0.1, from its own working directory and with its own
environment -- the tests give each worker node its own feast_bc cache, so whatever a task reads
comes from object storage into that node's mirror, never from the repo or the driver's mirror. The
head has no CPUs: every task runs on a worker node. Never ``ray stop`` (it would stop every Ray on
the machine, other tests' included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from local_redis import free_port


class LocalRayNodes:
    def __init__(self, workdir: Path, workers: int = 2, env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workers = workers
        # Ray >= 2.5x may find a token file from an earlier local Ray: these nodes run without auth.
        self.env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "disabled"}
        self.port = 0
        self.client_port = 0  # the head's Ray client server (ray://), on a free port, not Ray's fixed 10001
        self.head: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        self.node_dirs: list[Path] = []
        self.ports: set[int] = set()
        self.node_manager_ports: list[int] = []  # per worker node: how `ray.nodes()` tells them apart

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        """The ``ray://`` address of a driver that does not join the cluster (Ray client mode)."""
        return f"ray://127.0.0.1:{self.client_port}"

    def _ray(self) -> str:
        return str(Path(sys.executable).parent / "ray")

    def _start(self, args: list[str], cwd: Path, env: dict[str, str], log_name: str) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / log_name, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [self._ray(), "start", *args, "--block"], cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        return proc

    def start(self) -> LocalRayNodes:
        """Start the head and the worker nodes; on any failure stop what started, then raise."""
        try:
            return self._start_all()
        except BaseException:
            self.stop()
            raise

    def _start_all(self) -> LocalRayNodes:
        self.port, self.client_port = free_port(), free_port()
        while self.client_port == self.port:
            self.client_port = free_port()
        self.ports.update((self.port, self.client_port))
        common = ["--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
        head = ["--head", "--port", str(self.port), "--ray-client-server-port", str(self.client_port)]
        self.head = self._start(
            [*head, "--num-cpus", "0", "--include-dashboard", "false", *common],
            self.workdir / "head",
            self.env,
            "head.log",
        )
        self._wait_for(1)
        for i in range(self.workers):  # one at a time: concurrent nodes pick the same socket names
            self.add_worker(i)
            self._wait_for(2 + i)
        return self

    def add_worker(self, i: int) -> Path:
        node_dir = self.workdir / f"node{i}"
        env = {**self.env, "FEAST_BC_CACHE_DIR": str(node_dir / "cache")}
        args = ["--address", self.address, "--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
        # Two nodes on one machine must not share the ports Ray otherwise fixes per machine.
        for flag in (
            "--node-manager-port",
            "--object-manager-port",
            "--metrics-export-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
        ):
            port = free_port()
            while port in self.ports:
                port = free_port()
            self.ports.add(port)
            args += [flag, str(port)]
            if flag == "--node-manager-port":
                self.node_manager_ports.append(port)
        # a worker-port range of its own, above the head's Ray client servers (ports 23000-23999) and
        # below the kernel's ephemeral ports (32768+)
        low = 24000 + 2000 * i
        args += ["--min-worker-port", str(low), "--max-worker-port", str(low + 1999)]
        self.nodes.append(self._start(args, node_dir, env, f"node{i}.log"))
        self.node_dirs.append(node_dir)
        return node_dir

    def alive_nodes(self) -> int:
        proc = subprocess.run(
            [self._ray(), "status", "--address", self.address], capture_output=True, text=True, env=self.env, timeout=60
        )
        if proc.returncode != 0:
            return 0
        active = proc.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def _wait_for(self, nodes: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() < nodes:
            if time.monotonic() > deadline or (self.head is not None and self.head.poll() is not None):
                raise RuntimeError(f"Ray nodes did not start (logs in {self.workdir})")
            time.sleep(1)

    def node_not_serving_this_driver(self) -> int:
        """A worker node other than the one this process's Ray driver is attached to (objects the
        driver puts live in its node's store: killing that node would kill the driver's objects)."""
        import ray

        mine = ray.get_runtime_context().get_node_id()
        port = next(n["NodeManagerPort"] for n in ray.nodes() if n["NodeID"] == mine)
        return next(i for i, p in enumerate(self.node_manager_ports) if p != port)

    def kill_node(self, i: int) -> None:
        _stop(self.nodes[i], signal.SIGKILL)  # the node's raylet and workers die at once

    def stop(self) -> None:
        for proc in [*self.nodes, self.head]:
            if proc is not None:
                _stop(proc, signal.SIGTERM)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Stop a node: its `ray start` process and everything it started (its own process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the node is left (raylet, GCS, workers)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
