"""Package-level promises: light imports, the committed feature_repo template, the CLI basics."""

import subprocess
import sys

from conftest import REPO_ROOT
from feast_bc.repo import init_repo


def test_import_feast_bc_does_not_import_torch_or_feast():
    code = (
        "import sys, feast_bc, feast_bc.catalog, feast_bc.export, feast_bc.runtime, feast_bc.cli; "
        "print('torch' in sys.modules, 'feast' in sys.modules, 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"], out


def test_the_ray_engine_module_imports_ray_only_when_it_materializes():
    """Feast loads the batch engine for `feast apply` too: that must not need (or start) Ray.
    (Torch is not checked here: importing Feast itself imports it when it is installed.)"""
    code = "import sys, feast_bc.ray_engine; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"], out


def test_no_torch_import_anywhere_in_feast_bc():
    for path in (REPO_ROOT / "feast_bc").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
        assert "import training" not in text and "from training" not in text, path


def test_committed_feature_repo_is_what_init_repo_writes(tmp_path):
    fresh = init_repo(tmp_path / "repo", project="feast_bc")
    committed = REPO_ROOT / "feature_repo"
    for name in ["feature_store.yaml", "feature_store.redis.yaml", "bc_definitions.py", ".feastignore"]:
        assert (committed / name).read_text() == (fresh / name).read_text(), name


def test_docker_compose_defines_redis_and_the_feature_server():
    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["redis"]["healthcheck"]["test"][-1] == "ping"
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"]) and "redis-data" in compose["volumes"]
    server = services["feature-server"]
    # feast-bc serve (Feast's server behind the entity check) on the Redis profile, as its CLI reads it
    from feast_bc.cli import build_parser, cmd_serve

    assert server["command"][:2] == ["feast-bc", "serve"]
    args = build_parser().parse_args(server["command"][1:])
    assert args.func is cmd_serve and args.feature_store_yaml == "feature_store.redis.yaml" and args.port == 6566
    assert server["depends_on"]["redis"]["condition"] == "service_healthy"
    assert server["environment"]["FEAST_BC_REDIS"].startswith("redis:6379")
    assert (REPO_ROOT / server["build"]["dockerfile"]).is_file()
    # the served repo's Redis profile reads its connection string from that variable
    assert "${FEAST_BC_REDIS}" in (REPO_ROOT / "feature_repo" / "feature_store.redis.yaml").read_text()
