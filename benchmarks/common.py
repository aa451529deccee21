"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis_version = None
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except (OSError, IndexError):
        pass
    import feast

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "feast": feast.__version__,
        "numpy": np.__version__,
        "redis_server": redis_version,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def percentiles(samples_s: list[float]) -> dict:
    arr = np.asarray(samples_s) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)), "n": len(arr)}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def delete_project_keys(url: str, project: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    suffix = project.encode()
    batch = []
    for key in client.scan_iter(count=5000):
        if key.endswith(suffix):
            batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch = []
    if batch:
        client.delete(*batch)


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Resident memory of this process now (MiB)."""
    now = _proc_status_mib("VmRSS")
    return now if now is not None else float("nan")


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM).

    Why not ``ru_maxrss``: Linux carries it across fork+exec, so a worker started by a benchmark
    that had just published a large table reported the *parent's* size as its own peak.
    """
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """Highest resident memory of this process since start or the last :func:`reset_peak_rss` (MiB)."""
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else float("nan")


def check_pins(store, catalog, manifest, family: str, join_key: str, ids, z) -> int:
    """Every pin of ``family`` read through Feast for ``ids`` equals the float64 numpy chain of their
    latest vectors ``z`` (1e-4); the number of values compared. A benchmark's figures are of writes
    that land."""
    from conftest import online_vectors

    k = manifest.latest_version
    checked = 0
    for v in manifest.served_versions:
        want = np.asarray(z, dtype=np.float64)
        for u in range(k, v, -1):
            want = want @ np.asarray(catalog.transform(family, u, manifest).weight, dtype=np.float64).T
        got = np.asarray(online_vectors(store, family, v, join_key, ids), dtype=np.float64)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"pin v{v}")
        checked += got.size
    return checked
