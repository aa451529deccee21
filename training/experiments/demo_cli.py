"""`python -m training demo` on the command line: its options, the run
(:func:`training.experiments.demo.run_demo`) and what it prints at the end."""

from __future__ import annotations

from pathlib import Path

from training.chain import resolve_device
from training.data.config import SyntheticData
from training.data.options import add_data_arguments, data_config_from_args
from training.errors import ConfigError
from training.experiments.demo import DemoSettings, run_demo
from training.experiments.demo_report import DISPLAY, MAX_AUC_GAP, MIN_RECALL_RATIO, RECOMMENDED


def add_subcommand(sub) -> None:

    s = sub.add_parser("demo", help="the whole lifecycle: train, publish, materialize, a v0 consumer across updates")
    s.add_argument("--workdir", default="demo", help="where the feature repos and the report go (default ./demo)")
    add_data_arguments(s, default_help="default synthetic")
    s.add_argument("--profile", default="demo", help="training profile (default 'demo': reduced dims, ~2 min)")
    s.add_argument("--versions", type=int, help="stop after this many versions")
    s.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    s.add_argument("--redis-url", help="redis://host:port/db (with --online-store redis)")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--device", default="cpu")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:

    resolve_device(args.device)
    if args.online_store == "redis" and not args.redis_url:
        raise ConfigError("--online-store redis needs --redis-url redis://host:port/db")
    data = data_config_from_args(args) or SyntheticData()
    settings = DemoSettings(
        workdir=Path(args.workdir),
        data=data,
        profile=args.profile,
        online_store=args.online_store,
        redis_url=args.redis_url,
        seed=args.seed,
        device=args.device,
        versions=args.versions,
        progress=not args.no_progress,
    )
    report = run_demo(settings)
    print(
        f"\ndemo finished in {report.wall_seconds:.0f}s: feature repo {report.repos[RECOMMENDED]} "
        f"(contrast: {report.repos['bc-aligner']}, {report.repos['nobc']}); report {settings.workdir / 'report.json'}, "
        f"plot {settings.workdir / 'report.png'}"
    )
    if report.bar_met is not None:
        print(
            f"{DISPLAY[RECOMMENDED]} {'met' if report.bar_met else 'MISSED'} its bar at every version >= 1 "
            f"(consumer AUC within {MAX_AUC_GAP} of never updating, Recall@50 >= {MIN_RECALL_RATIO:.0%} of No-BC's)"
        )
    print(
        "the consumer was trained once on version 0 and never retrained; "
        + (
            "every Feast-served value matched the offline B-chain"
            if report.all_feast_checks_passed
            else "FEAST CHECK FAILED"
        )
    )
    return 0 if report.all_feast_checks_passed else 1
