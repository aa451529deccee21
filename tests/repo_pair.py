"""Two feature repos that must end up with the same online rows: one materialized the way under
test, the other the reference way, from one catalog. Shared by the fused-engine and Ray-engine tests."""

from __future__ import annotations

import shutil
import sqlite3

from conftest import delete_project_keys, redis_url, unique_project
from feast_bc import Catalog
from feast_bc.repo import apply, init_repo

YAML = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}
#: The batch_engine block `feast-bc init` writes; each repo of a pair replaces it with its own.
BC_BLOCK = "  type: feast_bc.engine.BCEngine\n  batch_rows: 65536\n"


class RepoPair:
    """``engine_blocks``: mode -> the batch_engine block of that repo (two modes; the catalog is
    published into the first and copied into the second by :meth:`apply`)."""

    def __init__(self, tmp_path, backend: str, engine_blocks: dict[str, str]):
        self.backend = backend
        self.repos, self.projects = {}, {}
        url = redis_url() if backend == "redis" else None
        for mode, block in engine_blocks.items():
            project = unique_project(f"{mode[:2]}{backend[:2]}")
            repo = init_repo(tmp_path / mode, project=project, online_store=backend, redis_url=url)
            for name in YAML.values():
                path = repo / name
                text = path.read_text()
                assert BC_BLOCK in text
                path.write_text(text.replace(BC_BLOCK, block))
            self.repos[mode], self.projects[mode] = repo, project
        first, self.reference = list(self.repos)
        self.catalog = Catalog.for_repo(self.repos[first])

    def apply(self) -> dict:
        """Copy the catalog to the reference repo and apply both; the two FeatureStores."""
        target = self.repos[self.reference] / "bc_catalog"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.catalog.root, target)
        return {mode: apply(repo, fs_yaml_file=repo / YAML[self.backend]) for mode, repo in self.repos.items()}

    def rows(self, mode: str) -> dict:
        if self.backend == "redis":
            return redis_hashes(self.projects[mode])
        return sqlite_rows(self.repos[mode], self.projects[mode])

    def cleanup(self) -> None:
        if self.backend == "redis":
            for project in self.projects.values():
                delete_project_keys(redis_url(), project)


def redis_hashes(project: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the project (key without the project suffix) with every field, raw bytes."""
    import redis

    client = redis.Redis.from_url(redis_url())
    suffix = project.encode()
    return {key[: -len(suffix)]: client.hgetall(key) for key in client.scan_iter(count=1000) if key.endswith(suffix)}


def sqlite_rows(repo, project: str) -> dict:
    """Every row of the project's tables in the repo's SQLite online store, keyed by (view, key, feature)."""
    con = sqlite3.connect(repo / "data" / "online_store.db")
    out = {}
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            if table.startswith(project + "_"):
                query = f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM "{table}"'
                for key, feature, *rest in con.execute(query):
                    out[(table[len(project) + 1 :], key, feature)] = tuple(rest)
    finally:
        con.close()
    return out
