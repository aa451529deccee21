"""`python -m training`: train and publish embedding versions from the command line.

Subcommands:

* ``train``   -- train the next version of the chain in ``--workdir`` and publish it into
  ``--repo`` (created if needed), then apply the repo to Feast. The first call defines the chain
  (data, strategy, profile and overrides, seed); later calls only say where/how to run.
* ``publish`` -- (re)publish a trained version, e.g. after a publish that failed.
* ``status``  -- what the work directory holds.
* ``fit-transform`` -- fit B_k post hoc for embeddings trained elsewhere (:mod:`training.fit_transform`).

``reproduce`` and ``demo`` come from the experiment harness (:mod:`training.experiments`); this
module is the one place that puts the library's commands and the harness's together.
A refusal prints one line ``training: error: ...`` to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import ValidationError

from feast_bc.errors import PublishRefusedError
from training import fit_transform
from training.arguments import int_list
from training.cache import ModelCache
from training.chain import resolve_device
from training.config import PROFILE_NAMES, profile
from training.data.config import SyntheticData
from training.data.options import add_data_arguments, data_config_from_args, validation_text
from training.errors import ConfigError, StateError, TrainingError
from training.evaluation import PRIMARY_K
from training.experiments import demo, reproduce
from training.models.factory import MODEL_KINDS
from training.strategies import DEFAULT_STRATEGY, PLUS_OPTIONS, STRATEGY_NAMES, make_strategy, parse_strategy_spec
from training.workdir import TrainingRun

# ----------------------------------------------------------------------------- option parsing
_CONFIG_OPTIONS = {
    "model": "model",
    "dims": "dims",
    "layers": "layers",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "eval_every": "eval_every",
    "select_after": "select_after_epoch",
    "finetune_epochs": "finetune_epochs",
    "posthoc_epochs": "posthoc_epochs",
}


def _chain_options_given(args) -> list[str]:
    names = [
        "strategy",
        "lam",
        "profile",
        "data",
        "data_config",
        "data_path",
        "meta_path",
        "columns",
        "attributes",
        "seed",
        *_CONFIG_OPTIONS,
    ]
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]


def _config_from_args(args):
    overrides = {field: getattr(args, opt) for opt, field in _CONFIG_OPTIONS.items() if getattr(args, opt) is not None}
    try:
        return profile(args.profile or "default", **overrides)
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid training configuration: {validation_text(exc)}") from None


# ----------------------------------------------------------------------------- subcommands
def cmd_train(args) -> int:

    resolve_device(args.device)  # fail before loading anything
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if TrainingRun.exists(args.workdir):
        given = _chain_options_given(args)
        if given:
            raise StateError(
                f"{args.workdir} already defines its chain; drop {', '.join(given)} (they are fixed at version 0) "
                "or use a new --workdir"
            )
        run = TrainingRun.open(args.workdir)
    else:
        spec = parse_strategy_spec(args.strategy or DEFAULT_STRATEGY)
        if args.lam is not None:
            spec = make_strategy(spec.name, lam=args.lam, **{k: getattr(spec, k) for k in PLUS_OPTIONS}).spec()
        run = TrainingRun.create(
            args.workdir,
            strategy=spec,
            config=_config_from_args(args),
            data=data_config_from_args(args) or SyntheticData(),
            seed=42 if args.seed is None else args.seed,
            repo=args.repo,
            project=args.project,
        )
    repo = _publish_target(run, args)
    if repo is not None and run.state.versions and run.state.versions[-1].published is None:
        last = run.state.versions[-1].version
        raise StateError(
            f"version {last} is trained but not published; run `python -m training publish --workdir {args.workdir}` "
            "first (or pass --no-publish)"
        )
    k = run.next_version
    print(f"training: {run.state.strategy.name} version {k} on {run.state.dataset_name} ({_describe(run.config, k)})")
    started = time.perf_counter()
    output = run.train_next_version(
        device=args.device,
        progress=not args.no_progress,
        cache=ModelCache(args.model_cache) if args.model_cache else None,
        expected_version=args.version,
    )
    print(_report(output, time.perf_counter() - started))
    if repo is not None:
        _publish(run, k, repo, apply=True, force=args.force_publish)
    return 0


def cmd_publish(args) -> int:

    run = TrainingRun.open(args.workdir)
    repo = _publish_target(run, args)
    if repo is None:
        raise StateError("no repo to publish into: pass --repo")
    version = run.next_version - 1 if args.version is None else args.version
    _publish(run, version, repo, apply=not args.no_apply, force=args.force_publish)
    return 0


def cmd_status(args) -> int:

    run = TrainingRun.open(args.workdir)
    if args.json:
        print(run.state.model_dump_json(indent=2))
        return 0
    s = run.state
    print(
        f"{run.workdir}: strategy {s.strategy.name}{'' if s.strategy.lam is None else f' (lam {s.strategy.lam:g})'}, "
        f"data {s.dataset_name}, seed {s.seed}, {len(s.versions)}/{s.config.num_versions} versions trained"
    )
    print(f"  publish target: {s.repo or '(none)'}")
    for v in s.versions:
        align = ", ".join(f"v{j}: {e['all']:.3f}" for j, e in v.alignment_error.items()) or "-"
        print(
            f"  v{v.version}: dim {v.model.dim}, layers {v.model.num_layers}, B {v.transform_kind or '-'}, "
            f"val recall@{PRIMARY_K} {v.val_recall.get(PRIMARY_K, float('nan')):.4f}, align error {align}, "
            f"{v.train_seconds:.1f}s, {'published' if v.published else 'not published'}"
        )
    return 0


def _publish_target(run, args) -> Path | None:
    if getattr(args, "no_publish", False):
        return None
    if args.repo is not None:
        run.set_publish_target(args.repo, args.project or run.state.project)
        return Path(args.repo)
    return Path(run.state.repo) if run.state.repo else None


def _publish(run, version: int, repo: Path, *, apply: bool, force: bool = False) -> None:
    print(
        f"publishing version {version} into {repo}{' (forced past the publish gate)' if force else ''} ...", flush=True
    )
    try:
        result = run.publish(version, repo, apply=apply, force=force)
    except PublishRefusedError as exc:
        raise exc.for_override(
            f"rerun with --force-publish (`python -m training publish --version {version} --force-publish`)"
        ) from None
    done = ", ".join(result.published) or "nothing new"
    skipped = f" (already there: {', '.join(result.skipped)})" if result.skipped else ""
    applied = "; applied to Feast -- run `feast materialize` to serve it" if apply else ""
    print(f"published {done}{skipped} as version {version}{applied}")


def _describe(config, k: int) -> str:
    return (
        f"dim {config.dims[k]}, {config.layers[k]} layers, {config.epochs} epochs, batch {config.batch_size}, "
        f"slice {config.time_slices[k]:g}->{config.time_slices[k + 1]:g}"
    )


def _report(output, seconds: float) -> str:
    recall = ", ".join(f"@{k} {v:.4f}" for k, v in sorted(output.val_recall.items()))
    align = ", ".join(f"v{j} {e['all']:.4f}" for j, e in sorted(output.alignment_error.items()))
    cached = " (model from cache)" if output.from_cache else ""
    return (
        f"version {output.version}: {len(output.user_ids)} users, {len(output.item_ids)} items, dim {output.dim}; "
        f"val recall {recall}; selected epoch {output.selected_epoch}"
        + (f"; alignment error {align}" if align else "")
        + f"; {seconds:.1f}s{cached}"
    )


# ----------------------------------------------------------------------------- parser
_FORCE_HELP = "publish even if the repo's publish gate (bc_catalog/publish_gate.json) refuses it; recorded as forced"


def _add_train(sub) -> None:
    s = sub.add_parser("train", help="train the next version and publish it")
    s.add_argument("--workdir", required=True, help="work directory holding the training state")
    s.add_argument("--repo", help="feature repo to publish into (created if missing; remembered)")
    s.add_argument("--project", help="Feast project name when the repo is created (default feast_bc)")
    s.add_argument("--no-publish", action="store_true", help="train and keep the state only")
    s.add_argument("--force-publish", action="store_true", help=_FORCE_HELP)
    s.add_argument("--version", type=int, help="refuse unless this is the next version")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    s.add_argument("--model-cache", help="directory caching BPR-only models shared between strategies")
    s.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: all cores; use 1 when other CPU-heavy processes share the machine)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    chain = s.add_argument_group("chain definition (first call only)")
    chain.add_argument(
        "--strategy",
        type=_strategy_text,
        metavar="NAME[:KEY=VALUE,...]",
        help=f"{', '.join(STRATEGY_NAMES)} (default {DEFAULT_STRATEGY}; paper-code names accepted); "
        "bc-aligner-plus takes options, e.g. bc-aligner-plus:intended_floor=0",
    )
    chain.add_argument("--lam", type=float, help="alignment weight of joint strategies (default 16)")
    chain.add_argument("--seed", type=int, help="default 42")
    chain.add_argument("--profile", choices=PROFILE_NAMES, help="default 'default'")
    chain.add_argument("--model", choices=MODEL_KINDS, help="default: the profile's (lightgcn for default and demo)")
    chain.add_argument("--dims", type=int_list, help="per-version dims, e.g. 256,320,384,448,512")
    chain.add_argument("--layers", type=int_list, help="per-version GNN layers, e.g. 2,2,3,3,3")
    chain.add_argument("--epochs", type=int)
    chain.add_argument("--batch-size", type=int)
    chain.add_argument("--learning-rate", type=float)
    chain.add_argument("--eval-every", type=int)
    chain.add_argument("--select-after", type=int, help="joint strategies select only after this epoch")
    chain.add_argument("--finetune-epochs", type=int)
    chain.add_argument("--posthoc-epochs", type=int)
    add_data_arguments(chain, default_help="default synthetic")
    s.set_defaults(func=cmd_train)


def _add_publish(sub) -> None:
    s = sub.add_parser("publish", help="publish a trained version (default: the latest) and apply the repo")
    s.add_argument("--workdir", required=True)
    s.add_argument("--repo", help="default: the repo remembered by train")
    s.add_argument("--project")
    s.add_argument("--version", type=int)
    s.add_argument("--no-apply", action="store_true", help="publish into the catalog without `feast apply`")
    s.add_argument("--force-publish", action="store_true", help=_FORCE_HELP)
    s.set_defaults(func=cmd_publish)


def _add_status(sub) -> None:
    s = sub.add_parser("status", help="versions trained and published in a work directory")
    s.add_argument("--workdir", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)


#: Subcommand name -> function adding it to the parser: the library's own, then the experiments'.
SUBCOMMANDS: dict[str, Callable] = {
    "train": _add_train,
    "publish": _add_publish,
    "status": _add_status,
    "fit-transform": fit_transform.add_subcommand,
    "reproduce": reproduce.add_subcommand,
    "demo": demo.add_subcommand,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
    return p


def _strategy_text(text: str) -> str:
    """``--strategy``: refused at parse time with the reason (unknown name or option, bad value)."""
    try:
        parse_strategy_spec(text)
    except (ConfigError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from feast_bc.errors import FeastBCError

    try:
        return args.func(args)
    except (TrainingError, FeastBCError) as exc:
        print(f"training: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
