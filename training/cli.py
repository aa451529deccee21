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

from feast_bc.errors import PublishRefusedError
from training import fit_transform
from training.cache import ModelCache
from training.chain import resolve_device
from training.cli_options import (
    add_publish_options,
    add_status_options,
    add_train_options,
    chain_options_given,
    config_from_args,
)
from training.data.config import SyntheticData
from training.data.options import data_config_from_args
from training.errors import StateError, TrainingError
from training.evaluation import PRIMARY_K
from training.experiments import demo_cli, reproduce_cli
from training.strategies import DEFAULT_STRATEGY, PLUS_OPTIONS, make_strategy, parse_strategy_spec
from training.workdir import TrainingRun


# ----------------------------------------------------------------------------- subcommands
def cmd_train(args) -> int:

    resolve_device(args.device)  # fail before loading anything
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if TrainingRun.exists(args.workdir):
        given = chain_options_given(args)
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
            config=config_from_args(args),
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
def _add_train(sub) -> None:
    s = sub.add_parser("train", help="train the next version and publish it")
    add_train_options(s)
    s.set_defaults(func=cmd_train)


def _add_publish(sub) -> None:
    s = sub.add_parser("publish", help="publish a trained version (default: the latest) and apply the repo")
    add_publish_options(s)
    s.set_defaults(func=cmd_publish)


def _add_status(sub) -> None:
    s = sub.add_parser("status", help="versions trained and published in a work directory")
    add_status_options(s)
    s.set_defaults(func=cmd_status)


#: Subcommand name -> function adding it to the parser: the library's own, then the experiments'.
SUBCOMMANDS: dict[str, Callable] = {
    "train": _add_train,
    "publish": _add_publish,
    "status": _add_status,
    "fit-transform": fit_transform.add_subcommand,
    "reproduce": reproduce_cli.add_subcommand,
    "demo": demo_cli.add_subcommand,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
    return p


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
