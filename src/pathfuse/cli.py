"""`pathfuse <stage>`: every workflow rule as a command, so each stage runs without Snakemake.

The stages come from :data:`pathfuse.stages.STAGES`, the table the Snakemake shim uses too, so
a rule and its command always run the same code. Besides the stages: ``check-config``,
``doctor`` (the preflight) and ``workflow-path``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pathfuse import resources
from pathfuse.config import Config, ConfigError
from pathfuse.stages import STAGES, run_stage

__all__ = ["STAGES", "build_parser", "main", "run_stage"]


def _parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` → (``key.sub``, YAML-parsed value), as Snakemake's --config does."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads "1e-3" as a string; a number is meant
        with contextlib.suppress(ValueError):
            parsed = float(parsed)
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    """``pathfuse <stage>``: one subcommand per stage, its unit of work as options."""
    parser = argparse.ArgumentParser(prog="pathfuse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, spec in STAGES.items():
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        p.add_argument("--config", default=None, type=Path, help="run config YAML (default: the demo's)")
        p.add_argument("--set", dest="overrides", action="append", default=[], type=_parse_override,
                       metavar="KEY=VALUE", help="override a config key (dotted), e.g. tiling.target_mpp=1.0")
        p.add_argument("--log", type=Path, default=None, help="log file (default: stderr)")
        for arg, typ in spec.args:
            p.add_argument(f"--{arg}", type=typ, required=True)
        for arg, typ, default in spec.optional:
            note = {"seed": ": a replicate's training seed (experts.n_seeds)",
                    "run": ": the finished run's results_dir (default: the config's)"}.get(arg, "")
            p.add_argument(f"--{arg}", type=typ, default=default, help=f"default {default}{note}")
    sub.add_parser("check-config", help="validate a run config and print it with defaults filled").add_argument(
        "--config", default=None, type=Path, help="run config YAML (default: the demo's)")
    sub.add_parser("workflow-path", help="print the Snakefile to run: snakemake -s \"$(pathfuse workflow-path)\" …")
    doctor = sub.add_parser("doctor", help="preflight a run: weights, slides, tables, SLURM profile (docs/doctor.md)")
    doctor.add_argument("--config", default=None, type=Path, help="run config YAML (default: the demo's)")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], type=_parse_override,
                        metavar="KEY=VALUE", help="override a config key (dotted)")
    doctor.add_argument("--profile", type=Path, default=None, help="also check this SLURM workflow profile")
    doctor.add_argument("--quick", action="store_true", help="file-existence checks only (no loading)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pathfuse``."""
    from pathfuse.logs import setup_logging

    args = build_parser().parse_args(argv)
    if args.stage == "workflow-path":
        print(resources.snakefile())
        return 0
    try:
        cfg = Config.from_file(args.config or resources.demo_config(), dict(getattr(args, "overrides", [])))
    except ConfigError as err:
        print(f"pathfuse: {err}", file=sys.stderr)
        return 2
    if args.stage == "check-config":
        print(json.dumps(cfg.raw, indent=2))
        return 0
    if args.stage == "doctor":
        from pathfuse.doctor import doctor

        return doctor(cfg, args.profile, deep=not args.quick)
    setup_logging(args.log)
    spec = STAGES[args.stage]
    kwargs = {arg: getattr(args, arg) for arg, _ in spec.args}
    # An optional argument left at its default is not passed: a default run calls what it always did.
    kwargs.update({arg: getattr(args, arg) for arg, _, dflt in spec.optional if getattr(args, arg) != dflt})
    result = run_stage(args.stage, cfg, kwargs)
    logging.getLogger("pathfuse").info("%s done: %s", args.stage, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
