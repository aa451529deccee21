"""Markdown tables from the benchmark JSON files (what docs/BENCHMARKS.md quotes).

    python benchmarks/tables.py serving docs/benchmarks/serving.json
    python benchmarks/tables.py materialize docs/benchmarks/materialize.json
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

        def cell(prefix: str) -> str:
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
        "| store | engine | rows | dim | latest (k=0) rows/s | older, k=1 | k=2 | k=3 | k=4 | older: median rows/s | peak RSS MiB (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (backend, engine, rows, dim), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "bc", kv[0][2], kv[0][3])):
        by_k = {r["chain_length"]: r for r in runs}
        older = [r["rows_per_s"] for r in runs if r["chain_length"] > 0]
        cells = [f"{by_k[k]['rows_per_s']:,.0f}" if k in by_k else "–" for k in range(5)]
        lines.append(
            f"| {backend} | {engine} | {rows:,} | {dim} | " + " | ".join(cells)
            + f" | {statistics.median(older):,.0f} | {max(r['peak_rss_mib'] for r in runs):,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["serving", "materialize"])
    p.add_argument("path", type=Path)
    args = p.parse_args()
    data = json.loads(args.path.read_text())
    print(data.get("machine", {}))
    print({"serving": serving, "materialize": materialize}[args.kind](data))


if __name__ == "__main__":
    main()
