"""The main job (`python -m training demo`) end to end in a reduced configuration."""

import json
import math

from training.data.config import SyntheticData
from training.experiments.demo import DemoSettings, run_demo


def test_demo_runs_end_to_end_and_reports(tmp_path):
    settings = DemoSettings(
        workdir=tmp_path / "demo",
        data=SyntheticData(num_users=300, num_items=200),
        profile="tiny",
        versions=3,
        consumer_epochs=8,
        consumer_patience=3,
        progress=False,
    )
    report = run_demo(settings)
    data = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert (tmp_path / "demo" / "report.png").stat().st_size > 10_000
    assert set(data) >= {
        "data",
        "online_store",
        "repos",
        "config",
        "consumer",
        "versions",
        "wall_seconds",
        "all_feast_checks_passed",
    }
    assert data["all_feast_checks_passed"] is True and report.all_feast_checks_passed
    assert [v["version"] for v in data["versions"]] == [0, 1, 2]
    for row in data["versions"]:
        assert set(row["strategies"]) == {"bc-aligner-plus", "bc-aligner", "nobc"}
        for s in row["strategies"].values():
            assert math.isfinite(s["recall_at_50"]) and 0 <= s["recall_at_50"] <= 1
            assert s["feast"]["passed"] and s["feast"]["max_abs_diff_user"] <= 1e-5
            if row["version"] >= 1:
                assert math.isfinite(s["consumer_auc"]) and math.isfinite(s["align_error_v0"])
    # the repo the demo built is a working Feast repo serving every pinned version
    from feast import FeatureStore

    store = FeatureStore(repo_path=data["repos"]["bc-aligner-plus"])  # the recommended method's repo
    names = {s.name for s in store.list_feature_services()}
    assert {f"{f}_v{j}" for f in ("user_embedding", "item_embedding") for j in range(3)} <= names
    assert math.isfinite(data["consumer"]["val_auc_v0"]) and data["consumer"]["val_auc_v0"] > 0.6
    assert data["recommended"] == "bc-aligner-plus" and isinstance(data["bar_met"], bool)
