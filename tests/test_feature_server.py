"""Feast's HTTP feature server answers a pinned version exactly like the Python SDK."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import numpy as np

from conftest import VENV_BIN, publish_users_and_items, unique_project
from feast_bc import Catalog
from feast_bc.repo import apply, init_repo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_feature_server_serves_pinned_versions_like_the_sdk(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("fs"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=3)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(seconds=5))
    port = _free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"feast serve did not come up:\n{server.stdout.read() if server.poll() is not None else ''}")
                time.sleep(0.5)
        items = fams["item_embedding"]
        ids = [int(i) for i in items.ids[2][:6]] + [999_999]  # plus an unknown entity
        for v in range(3):
            body = _post(
                f"http://127.0.0.1:{port}/get-online-features",
                {"feature_service": f"item_embedding_v{v}", "entities": {"item_id": ids}},
            )
            names = body["metadata"]["feature_names"]
            assert names == ["item_id", "embedding"], names
            http_values = body["results"][names.index("embedding")]["values"]
            sdk = store.get_online_features(
                features=store.get_feature_service(f"item_embedding_v{v}"), entity_rows=[{"item_id": i} for i in ids]
            ).to_dict()["embedding"]
            assert http_values[-1] is None and sdk[-1] is None
            np.testing.assert_array_equal(np.asarray(http_values[:-1], dtype=np.float32), np.asarray(sdk[:-1], dtype=np.float32))
            np.testing.assert_allclose(np.asarray(http_values[:-1]), items.expected(v, ids[:-1]), atol=1e-5, rtol=0)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
