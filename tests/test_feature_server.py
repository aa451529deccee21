"""Feast's HTTP feature server answers a pinned version exactly like the Python SDK."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import numpy as np

from conftest import (
    REPO_ROOT,
    VENV_BIN,
    ask_on_read,
    assert_online_matches,
    publish_users_and_items,
    run_cli,
    unique_project,
)
from feast_bc import Catalog, EntitySpec
from feast_bc.repo import apply, init_repo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _post_raw(url: str, body: bytes) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of a POST whose body is sent exactly as given."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def _feast_serve(repo, command: tuple[str, ...] = ("feast", "serve", "-h", "127.0.0.1", "--no-access-log")):
    """A feature server (`feast serve` unless ``command`` says otherwise) on a free loopback port,
    up and healthy; yields the port."""
    port = _free_port()
    port_flag = "--port" if command[0] == "feast-bc" else "-p"
    server = subprocess.Popen(
        [str(VENV_BIN / command[0]), *command[1:], port_flag, str(port)],
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
                    raise AssertionError(
                        f"feast serve did not come up:\n{server.stdout.read() if server.poll() is not None else ''}"
                    ) from None
                time.sleep(0.5)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def test_feature_server_serves_pinned_versions_like_the_sdk(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("fs"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=3)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    with _feast_serve(repo) as port:
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
            np.testing.assert_array_equal(
                np.asarray(http_values[:-1], dtype=np.float32), np.asarray(sdk[:-1], dtype=np.float32)
            )
            np.testing.assert_allclose(np.asarray(http_values[:-1]), items.expected(v, ids[:-1]), atol=1e-5, rtol=0)


def _readme_curl_command() -> str:
    """The `curl` example of the README, exactly as documented (a shell command)."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = [b.strip() for b in blocks if b.lstrip().startswith("curl ") and "/get-online-features" in b]
    assert len(commands) == 1, commands
    return commands[0]


def test_the_readme_curl_example_works_as_written(tmp_path):
    """README: `curl -s localhost:6566/get-online-features ...` -- run through bash exactly as written,
    only the port changed to the test server's; it must return item_embedding_v0 for items 1 and 2."""
    command = _readme_curl_command()
    assert "localhost:6566" in command
    repo = init_repo(tmp_path / "repo", project=unique_project("rd"))
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(0)
    ids = np.arange(40)  # items 0..39: the README asks for 1 and 2
    z0 = rng.normal(size=(40, 6)).astype(np.float32)
    z1 = rng.normal(size=(40, 9)).astype(np.float32)
    b1 = rng.normal(size=(6, 9)).astype(np.float32)
    catalog.publish("item_embedding", ids=ids, vectors=z0, entity=EntitySpec(name="item", join_key="item_id"))
    catalog.publish("item_embedding", ids=ids, vectors=z1, transform=b1)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    with _feast_serve(repo) as port:
        proc = subprocess.run(
            ["bash", "-c", command.replace("localhost:6566", f"localhost:{port}")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert "detail" not in body, body  # what the feature server answers a request it cannot parse (HTTP 422)
    names = body["metadata"]["feature_names"]
    assert names == ["item_id", "embedding"], names
    assert body["results"][0]["values"] == [1, 2]
    got = np.asarray(body["results"][1]["values"], dtype=np.float64)
    want = z1[[1, 2]].astype(np.float64) @ b1.astype(np.float64).T  # version 0 = B_1 z_1
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_on_read_is_refused_and_the_pin_served_stored_answers_one_right_column_over_http(tmp_path):
    """Issue 22 case 1: an on-read pin through `feast serve` returned ``[item_id, embedding,
    embedding]``, the first being the LATEST version's vector (Feast 0.67 keeps an ODFV's input when
    its name is requested; not fixable from feast_bc without storing the latest twice). On-read
    serving is refused now: `feast-bc serving --mode on-read` says why in one line, a manifest an
    earlier feast_bc left asking for it is refused by `feast apply` and reported by `status` with
    the repair, and after that repair the pin answers exactly one correct column over HTTP."""
    repo = init_repo(tmp_path / "repo", project=unique_project("fsor"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=3)
    before = catalog.manifest("item_embedding")
    serving = ["feast-bc", "serving", "--repo", str(repo), "--family", "item_embedding", "--version", "0"]
    refused = run_cli([*serving, "--mode", "on-read"], check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "cannot serve an on-read version correctly" in refused.stderr and "feast-bc retire" in refused.stderr
    assert catalog.manifest("item_embedding") == before

    ask_on_read(catalog, "item_embedding", 0)
    applied = run_cli(["feast", "apply"], cwd=repo, check=False)
    said = applied.stdout + applied.stderr
    assert applied.returncode != 0 and "Traceback" not in said and "ConfigurationError" in said, said
    assert "--version 0 --mode stored" in said, said
    status = run_cli(["feast-bc", "status", "--repo", str(repo), "--sample", "0"], check=False)
    assert status.returncode != 0 and "served on read" in status.stdout, status.stdout

    run_cli([*serving, "--mode", "stored"])
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    items = fams["item_embedding"]
    ids = [int(i) for i in items.ids[2][:5]]
    with _feast_serve(repo) as port:
        for full, column in ((False, "embedding"), (True, "item_embedding__embedding")):
            body = _post(
                f"http://127.0.0.1:{port}/get-online-features",
                {"feature_service": "item_embedding_v0", "entities": {"item_id": ids}, "full_feature_names": full},
            )
            assert body["metadata"]["feature_names"] == ["item_id", column], body["metadata"]
            got = np.asarray(body["results"][1]["values"], dtype=np.float32)
            np.testing.assert_allclose(got, items.expected(0, ids), atol=1e-5, rtol=0)
    assert_online_matches(store, fams)


#: Reads `feast serve` (Feast 0.67) cannot answer (docs/RELIABILITY.md section 15: HTTP 500s, and a
#: NaN id that closed the connection and left the server answering nothing), the status and a
#: phrase of the one line `feast-bc serve` answers each with.
_BAD_READS = [
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [1, null]}}', 422, "is null"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [1e30]}}', 422, "outside INT64"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [9223372036854775808]}}', 422, "outside INT64"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [NaN]}}', 422, "NaN"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [Infinity]}}', 422, "Infinity"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [[1, 2]]}}', 422, "JSON list"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": ["7"]}}', 422, "send whole numbers"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [1.5]}}', 422, "send whole numbers"),
    ('{"feature_service": "item_embedding_v0", "entities": {"user_id": [1]}}', 422, "'item_id'"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": 5}}', 422, "must be a list"),
    ('{"feature_service": "no_such_service", "entities": {"item_id": [1]}}', 404, "item_embedding_v0"),
    ('{"features": ["item_embedding_bc0:embedding"], "entities": {"user_id": [3]}}', 422, "'item_id'"),
    ('{"feature_service": "item_embedding_v0", "entities": {"item_id": [1, 2], "user_id": [1]}}', 422, "lengths"),
    ('{"feature_service": "item_embedding_v0"', 422, "not JSON"),
    ("[1, 2]", 422, "JSON object"),
]


def test_feast_bc_serve_answers_every_bad_read_in_one_line_and_keeps_serving(tmp_path):
    """Issue 22 (the feature server's answers): `feast-bc serve` is Feast's own app behind a check
    of the entity values. Each read `feast serve` answered with a 500 or a dead connection is one
    line with a 4xx here; good reads before and after every bad one return the pin's values exactly
    (an unknown id -> null, as Feast answers it)."""
    repo = init_repo(tmp_path / "repo", project=unique_project("fsv"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    items = fams["item_embedding"]
    ids = [int(i) for i in items.ids[1][:4]]
    good = json.dumps({"feature_service": "item_embedding_v0", "entities": {"item_id": [*ids, 999_999]}}).encode()
    with _feast_serve(repo, ("feast-bc", "serve", "--repo", ".", "--no-access-log")) as port:
        url = f"http://127.0.0.1:{port}/get-online-features"

        def read_is_right():
            status, body = _post_raw(url, good)
            assert status == 200, body
            assert body["metadata"]["feature_names"] == ["item_id", "embedding"], body["metadata"]
            values = body["results"][1]["values"]
            assert values[-1] is None
            np.testing.assert_allclose(np.asarray(values[:-1]), items.expected(0, ids), atol=1e-5, rtol=0)

        read_is_right()
        for raw, want_status, phrase in _BAD_READS:
            status, body = _post_raw(url, raw.encode())
            assert status == want_status, (raw, status, body)
            assert set(body) == {"detail"} and "\n" not in body["detail"] and phrase in body["detail"], (raw, body)
            read_is_right()
        # everything else is Feast's app unchanged
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert resp.status == 200


def test_feast_bc_serve_takes_feasts_push_request_into_every_pin(tmp_path):
    """Issue 25: Feast's `/push` body naming a feast_bc family reaches every pin through `feast-bc
    serve` (recorded in the catalog first); a stale version is 409, a bad batch 422, one line each."""
    from feast_bc.catalog.push_log import segments

    repo = init_repo(tmp_path / "repo", project=unique_project("fpush"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    items = fams["item_embedding"]
    ids = [int(items.ids[1][0]), 777_001]
    z = np.random.default_rng(3).normal(size=(2, items.vectors[1].shape[1])).astype(np.float32)
    push = {
        "push_source_name": "item_embedding",
        "df": {"item_id": ids, "embedding": z.tolist(), "source_version": [1, 1]},
        "to": "online",
    }
    with _feast_serve(repo, ("feast-bc", "serve", "--repo", ".", "--no-access-log")) as port:
        url = f"http://127.0.0.1:{port}"
        status, body = _post_raw(f"{url}/push", json.dumps(push).encode())
        assert status == 200 and body["rows"] == 2 and body["written"][0]["versions"] == [0, 1], body
        items.push(ids, z)
        for version in (0, 1):
            read = _post(
                f"{url}/get-online-features",
                {"feature_service": f"item_embedding_v{version}", "entities": {"item_id": ids}},
            )
            np.testing.assert_allclose(
                np.asarray(read["results"][1]["values"]), items.expected(version, ids), atol=1e-5, rtol=0
            )
        stale = {**push, "df": {**push["df"], "source_version": [0, 0]}}
        for raw, want_status, phrase in (
            (stale, 409, "computed for version 0"),
            ({**push, "df": {**push["df"], "embedding": [[1.0], [2.0]]}}, 422, "dimension"),
            ({**push, "df": {"item_id": ids, "embedding": z.tolist()}}, 422, "source_version"),
        ):
            status, body = _post_raw(f"{url}/push", json.dumps(raw).encode())
            assert status == want_status and phrase in body["detail"] and "\n" not in body["detail"], (status, body)
    assert len(segments(Catalog.for_repo(repo).family_dir("item_embedding"))) == 1
