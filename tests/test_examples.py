"""examples/own_model.py runs as a new user runs it (a subprocess, its own work directory) and
passes its own checks: Feast's version-0 values equal the numpy chain, the version-0 consumer keeps
its accuracy, the encoder does not get worse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_own_model_example_passes_its_checks(tmp_path):
    work = tmp_path / "own_model"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_model.py"), "--workdir", str(work), "--epochs", "6"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("version ")]
    assert [line.split(":")[0] for line in lines] == ["version 0", "version 1", "version 2"]
    assert "max |diff|" in lines[-1]
    assert (work / "feature_repo" / "bc_catalog" / "product_embedding" / "manifest.json").is_file()


def test_own_model_example_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_model.py"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not made by this example" in done.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
