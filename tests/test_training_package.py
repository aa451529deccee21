"""Package promises of `training`: cheap to import, Feast only when publishing, no pickle in state."""

import subprocess
import sys

from conftest import REPO_ROOT


def _modules_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print('torch' in sys.modules, 'feast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_import_training_is_light_and_publishing_code_does_not_import_feast():
    assert _modules_after("import training") == ["False", "False"]
    # The publisher and the CLI need torch but must not pay for Feast until a repo is applied.
    assert _modules_after("import training.publish, training.cli, training.workdir") == ["True", "False"]


def test_lazy_public_names_resolve():
    import training

    for name in training.__all__:
        assert getattr(training, name) is not None, name


def test_training_code_never_unpickles():
    for path in (REPO_ROOT / "training").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "weights_only=False" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
