"""`fibseg make-prior BUNDLE`: the FIB-SEM prior's recipe (fibseg.pipeline.prior) as a
command, one option per number of the recipe."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields
from pathlib import Path

from ..io.errors import InputError
from ..runtime.settings import PriorRecipe


def add_prior_parser(commands, epilog: str) -> None:
    """The make-prior command on the `fibseg` parser's subcommands."""
    prior = commands.add_parser(
        "make-prior",
        help="reproduce the FIB-SEM prior (a U-Net trained on simulated films) as a bundle",
        description="Train fibseg's default U-Net on simulated films with exact truth (the "
        "simulator's family 'prior') from one seed and write it as a model bundle, with its "
        "recipe, the simulator's version and SHA-256 in fibseg-model.json "
        "(fibseg.pipeline.prior). Every number of the recipe is an option.",
        epilog="Example: fibseg make-prior my_prior --seed 0. " + epilog,
    )
    prior.add_argument("bundle", metavar="BUNDLE", help="the new bundle folder")
    add_recipe_options(prior)


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """One option per number of fibseg.pipeline.prior.PriorRecipe (--films, --epochs, ...)."""
    for field in fields(PriorRecipe):
        if field.type in ("int", "float"):
            parser.add_argument(
                f"--{field.name.replace('_', '-')}",
                type=int if field.type == "int" else float,
                default=field.default,
                help=f"(default {field.default})",
            )


def prior_command(args: argparse.Namespace, log: logging.Logger) -> int:
    """Make the prior from the options into the new folder BUNDLE."""
    from ..pipeline.prior import make_prior

    if Path(args.bundle).exists():
        raise InputError(
            "the bundle folder exists.", file=args.bundle, fix="give a new folder name."
        )
    values = {f.name: getattr(args, f.name) for f in fields(PriorRecipe) if hasattr(args, f.name)}
    recipe = PriorRecipe(**values)
    log.info("making the FIB-SEM prior: %s", recipe)
    folder = make_prior(recipe, args.bundle, log)
    print(f"wrote {folder}: model.keras, postprocess.json, fibseg-model.json")
    return 0
