"""`python -m training reproduce` on the command line: its options, and how they become a
:class:`~training.experiments.reproduce_config.ReproduceConfig` run by
:func:`training.experiments.reproduce.run_reproduction`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from training.arguments import float_list, int_list, name_list
from training.chain import resolve_device
from training.config import PROFILE_NAMES
from training.data.options import add_data_arguments, data_config_from_args
from training.errors import ConfigError
from training.experiments.report_markdown import summary_table
from training.experiments.reproduce import run_reproduction
from training.experiments.reproduce_config import PROFILES, make_config
from training.strategies import STRATEGY_NAMES, StrategySpec, parse_strategy_spec


def _variant(text: str) -> tuple[str, StrategySpec]:
    """``LABEL=name[:key=value,...]``, e.g. ``plus-cold=bc-aligner-plus:warm_start=false``."""

    label, eq, spec = text.partition("=")
    if not eq or not label.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=STRATEGY[:key=value,...], got {text!r}")
    try:
        return label.strip(), parse_strategy_spec(spec)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_subcommand(sub) -> None:
    """Register ``reproduce`` on the ``python -m training`` parser (see ``training.cli.SUBCOMMANDS``)."""

    s = sub.add_parser(
        "reproduce",
        help="the paper's experiment: 8 strategies x 5 versions, consumers on 5 unintended tasks, report",
        description="the paper's experiment end to end, and its report",
    )
    s.add_argument("--out", required=True, help="directory for results.json, report.md and the PNG plots")
    s.add_argument("--profile", choices=list(PROFILES), default="full", help="default full")
    s.add_argument("--quick", action="store_true", help="the quick profile (same as --profile quick)")
    add_data_arguments(s, default_help="default: the profile's")
    s.add_argument("--training-profile", choices=PROFILE_NAMES, help="training profile instead of the profile's")
    s.add_argument("--epochs", type=int, help="override the training epochs")
    s.add_argument("--seeds", type=int, help="consumer seeds per task (paper: 10)")
    s.add_argument(
        "--strategies",
        type=name_list,
        help="comma-separated strategies (default all eight; fix-m0 and nobc always run as references)",
    )
    s.add_argument(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="LABEL=SPEC",
        help="an extra method under its own label, e.g. plus-cold=bc-aligner-plus:warm_start=false (repeatable)",
    )
    s.add_argument(
        "--feast",
        type=name_list,
        default=None,
        help="methods whose consumers read through Feast (default bc-aligner, bc-aligner-plus; 'none' for none)",
    )
    s.add_argument("--hidden-dims", type=int_list, help="consumer grid: hidden sizes, e.g. 128,256,512,1024")
    s.add_argument("--dropouts", type=float_list, help="consumer grid: dropout rates, e.g. 0,0.25,0.5")
    s.add_argument("--consumer-max-epochs", type=int, help="user/item-task consumers: epoch cap")
    s.add_argument("--consumer-patience", type=int, help="user/item-task consumers: early-stopping patience")
    s.add_argument("--edge-max-epochs", type=int, help="edge-task consumers: epoch cap")
    s.add_argument("--edge-patience", type=int, help="edge-task consumers: early-stopping patience")
    s.add_argument("--seed", type=int, default=42, help="embedding-model seed (default 42)")
    s.add_argument("--lam", type=float, help="λ of the joint strategies (default 16)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    s.add_argument("--threads", type=int, help="torch threads (default torch's: one per core)")
    s.add_argument("--workdir", help="keep the model cache and Feast repos here (default: a temporary directory)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:

    resolve_device(args.device)
    name = "quick" if args.quick else args.profile
    consumer = {
        k: v
        for k, v in dict(
            num_seeds=args.seeds,
            hidden_dims=args.hidden_dims,
            dropouts=args.dropouts,
            max_epochs=args.consumer_max_epochs,
            patience=args.consumer_patience,
            edge_max_epochs=args.edge_max_epochs,
            edge_patience=args.edge_patience,
        ).items()
        if v is not None
    }
    feast = args.feast
    if feast is not None and feast in (["none"], []):
        feast = []
    elif feast == ["all"]:
        feast = list(STRATEGY_NAMES) if args.strategies is None else args.strategies
    config = make_config(
        name,
        data=data_config_from_args(args),
        training_profile=args.training_profile,
        training_overrides={"epochs": args.epochs} if args.epochs else None,
        consumer_overrides=consumer,
        strategies=args.strategies,
        feast_strategies=feast,
        variants=dict(args.variant),
        seed=args.seed,
        lam=args.lam,
        device=args.device,
        threads=args.threads,
    )
    command = (
        "python -m training " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if sys.argv[1:2] == ["reproduce"]
        else "python -m training reproduce ..."
    )
    print(
        f"reproduce ({name}): {', '.join(config.methods())}; data {config.data.kind}; training dims "
        f"{list(config.training.dims)}, {config.training.epochs} epochs; consumers: grid "
        f"{len(config.consumer.grid)} x {config.consumer.num_seeds} seeds; Feast: {', '.join(config.feast_strategies) or 'none'}",
        flush=True,
    )
    results = run_reproduction(config, args.out, workdir=args.workdir, progress=not args.no_progress, command=command)
    print(summary_table(results, with_paper=False))
    print(f"wall time {results.meta.wall_seconds / 60:.1f} min; report in {Path(args.out) / 'report.md'}")
    if not results.feast_checks_passed:
        print(
            "training: error: Feast-served version-0 embeddings differ from the offline computation by more than "
            "1e-5 (see the report's Feast table)",
            file=sys.stderr,
        )
        return 1
    return 0
