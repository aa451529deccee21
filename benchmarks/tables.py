"""Markdown tables from the benchmark JSON files (what docs/BENCHMARKS.md quotes).

python benchmarks/tables.py serving docs/benchmarks/serving.json
python benchmarks/tables.py materialize docs/benchmarks/materialize.json
python benchmarks/tables.py plot docs/benchmarks   # -> materialize.png, serving.png beside the JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def serving(data: dict) -> str:
    lines = [
        "| store | dim | entities/call | pinned older (p50 / p99 ms) | plain FeatureView | pinned latest | on-read older | raw Redis floor | pinned-older / plain p50 (median of runs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in data["configs"]:
        t = c["targets"]

        def cell(prefix: str, t: dict = t) -> str:
            name = next((k for k in t if k.startswith(prefix)), None)
            return "–" if name is None else f"{t[name]['p50_ms']:.3f} / {t[name]['p99_ms']:.3f}"

        lines.append(
            f"| {c['backend']} | {c['dim']} | {c['entities_per_call']} | {cell('pinned_old')} | {cell('plain')} | "
            f"{cell('pinned_latest')} | {cell('on-read')} | {cell('raw')} | {c['ratio_pinned_old_vs_plain_p50_median']:.3f} |"
        )
    return "\n".join(lines)


def materialize(data: dict) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in data["runs"]:
        groups[(r["backend"], r["engine"], r["rows"], r["dim"])].append(r)
    lines = [
        "| store | engine | rows | dim | latest (k=0) rows/s | older, k=1 | k=2 | k=3 | k=4 | older: median rows/s | peak RSS MiB (max) | added by materialize MiB (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (backend, engine, rows, dim), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "bc", kv[0][2], kv[0][3])
    ):
        by_k = {r["chain_length"]: r for r in runs}
        older = [r["rows_per_s"] for r in runs if r["chain_length"] > 0]
        cells = [f"{by_k[k]['rows_per_s']:,.0f}" if k in by_k else "–" for k in range(5)]
        added_values = [r["materialize_added_mib"] for r in runs if "materialize_added_mib" in r]
        added = f"{max(added_values):,.0f}" if added_values else "–"
        lines.append(
            f"| {backend} | {engine} | {rows:,} | {dim} | "
            + " | ".join(cells)
            + f" | {statistics.median(older):,.0f} | {max(r['peak_rss_mib'] for r in runs):,.0f} | {added} |"
        )
    return "\n".join(lines)


def plot(directory: Path) -> list[Path]:
    """The two comparisons people ask for, as PNGs next to the JSON they come from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    mat_path = directory / "materialize.json"
    if mat_path.exists():
        data = json.loads(mat_path.read_text())
        groups: dict[tuple, list[float]] = defaultdict(list)
        for r in data["runs"]:
            if r["chain_length"] > 0:
                groups[(r["backend"], r["engine"], r["dim"], r["rows"])].append(r["rows_per_s"])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, dim in zip(axes, (256, 512), strict=True):
            series = sorted({(b, e) for (b, e, d, _) in groups if d == dim})
            for backend, engine in series:
                pts = sorted(
                    (n, statistics.median(v))
                    for (b, e, d, n), v in groups.items()
                    if (b, e, d) == (backend, engine, dim)
                )
                ax.plot(
                    [n for n, _ in pts],
                    [v for _, v in pts],
                    marker="o",
                    label=f"{backend} / {'feast_bc BCEngine' if engine == 'bc' else 'Feast local engine'}",
                )
            ax.axhline(100_000, color="grey", linestyle="--", linewidth=1, label="target (Redis): 100k rows/s")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("rows materialized")
            ax.set_title(f"older versions (k = 1..4, median), d = {dim}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("rows / s")
        axes[1].legend(fontsize=8)
        fig.suptitle("Materialization throughput on 2 cores")
        fig.tight_layout()
        out = directory / "materialize.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    srv_path = directory / "serving.json"
    if srv_path.exists():
        data = json.loads(srv_path.read_text())
        labels, series = [], defaultdict(list)
        names = [
            ("pinned_old", "pinned older (stored)"),
            ("plain", "plain FeatureView"),
            ("on-read", "older, on read"),
            ("raw", "raw Redis HMGET"),
        ]
        for c in data["configs"]:
            labels.append(f"{c['backend']}\nd={c['dim']}\n{c['entities_per_call']} ent.")
            for prefix, label in names:
                name = next((k for k in c["targets"] if k.startswith(prefix)), None)
                series[label].append(c["targets"][name]["p50_ms"] if name else float("nan"))
        fig, ax = plt.subplots(figsize=(11, 4))
        width = 0.2
        for i, (_, label) in enumerate(names):
            xs = [j + (i - 1.5) * width for j in range(len(labels))]
            ax.bar(xs, series[label], width=width, label=label)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("p50 ms per get_online_features call")
        ax.set_title("Serving: a pinned older version costs what a plain FeatureView costs")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        fig.tight_layout()
        out = directory / "serving.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["serving", "materialize", "plot"])
    p.add_argument("path", type=Path, help="a JSON file; for plot, the directory holding them")
    args = p.parse_args()
    if args.kind == "plot":
        for path in plot(args.path):
            print(f"wrote {path}")
        return
    data = json.loads(args.path.read_text())
    print(data.get("machine", {}))
    print({"serving": serving, "materialize": materialize}[args.kind](data))


if __name__ == "__main__":
    main()
