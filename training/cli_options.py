"""What ``python -m training train | publish | status`` accept, and how the options become a chain.

Kept apart from :mod:`training.cli` (the subcommands themselves): the argument declarations, the
options that define a chain (fixed at version 0) and the training configuration they override.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from training.arguments import int_list
from training.config import PROFILE_NAMES, profile
from training.data.options import add_data_arguments, validation_text
from training.errors import ConfigError
from training.models.factory import MODEL_KINDS
from training.strategies import DEFAULT_STRATEGY, STRATEGY_NAMES, parse_strategy_spec

#: ``--option`` (argparse dest) -> the training configuration field it overrides.
CONFIG_OPTIONS = {
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


def chain_options_given(args) -> list[str]:
    """The chain-defining options given on the command line (refused once a chain exists)."""
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
        *CONFIG_OPTIONS,
    ]
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]


def config_from_args(args):
    """The training configuration: the chosen profile with the given options overriding it."""
    overrides = {field: getattr(args, opt) for opt, field in CONFIG_OPTIONS.items() if getattr(args, opt) is not None}
    try:
        return profile(args.profile or "default", **overrides)
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid training configuration: {validation_text(exc)}") from None


FORCE_HELP = "publish even if the repo's publish gate (bc_catalog/publish_gate.json) refuses it; recorded as forced"


def add_train_options(s) -> None:
    """The options of ``train``: where and how to run, then the chain definition (first call only)."""
    s.add_argument("--workdir", required=True, help="work directory holding the training state")
    s.add_argument("--repo", help="feature repo to publish into (created if missing; remembered)")
    s.add_argument("--project", help="Feast project name when the repo is created (default feast_bc)")
    s.add_argument("--no-publish", action="store_true", help="train and keep the state only")
    s.add_argument("--force-publish", action="store_true", help=FORCE_HELP)
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
        type=strategy_text,
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


def add_publish_options(s) -> None:
    """The options of ``publish``."""
    s.add_argument("--workdir", required=True)
    s.add_argument("--repo", help="default: the repo remembered by train")
    s.add_argument("--project")
    s.add_argument("--version", type=int)
    s.add_argument("--no-apply", action="store_true", help="publish into the catalog without `feast apply`")
    s.add_argument("--force-publish", action="store_true", help=FORCE_HELP)


def add_status_options(s) -> None:
    """The options of ``status``."""
    s.add_argument("--workdir", required=True)
    s.add_argument("--json", action="store_true")


def strategy_text(text: str) -> str:
    """``--strategy``: refused at parse time with the reason (unknown name or option, bad value)."""
    try:
        parse_strategy_spec(text)
    except (ConfigError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
