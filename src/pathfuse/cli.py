"""`pathfuse <stage>`: every workflow rule as a command, so each stage runs without Snakemake.

The table :data:`STAGES` is the one place that maps a stage name to its library function and
arguments. The Snakemake shim (``workflow/scripts/run_stage.py``) calls :func:`run_stage` with
the same names, so a rule and its command always run the same code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pathfuse.config import Config, ConfigError


@dataclass(frozen=True)
class Stage:
    """A stage: the function it runs (``module:function``) and its keyword arguments."""

    target: str
    help: str
    args: tuple[tuple[str, type], ...] = ()

    def function(self) -> Callable[..., Any]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {
    "demo-data": Stage("pathfuse.data.demo:generate_demo", "generate the synthetic demo cohort"),
    "tile": Stage(
        "pathfuse.slides.tiling:tile_shard", "tile one shard of a cohort's slides",
        (("cohort", str), ("shard", int)),
    ),
    "tile-index": Stage(
        "pathfuse.slides.tiling:index_cohort", "collect a cohort's tiled and skipped slides",
        (("cohort", str),),
    ),
    "embed-slides": Stage(
        "pathfuse.encoders.extract:embed_shard", "embed one shard of a cohort's tiles with one encoder",
        (("encoder", str), ("cohort", str), ("shard", int)),
    ),
    "embed-tiles": Stage(
        "pathfuse.encoders.tile_datasets:embed_tile_datasets",
        "embed every tile dataset of the run's tile tasks with one encoder (skips finished ones)",
        (("encoder", str),),
    ),
    "train-experts": Stage(
        "pathfuse.experts:train_experts", "train one encoder's expert head on one task, all folds",
        (("task", str), ("encoder", str)),
    ),
    "fuse": Stage("pathfuse.fusion.run:fuse_task", "train every fuser and baseline of one task", (("task", str),)),
    "evaluate": Stage("pathfuse.evaluation:evaluate_task", "score every prediction file of one task", (("task", str),)),
    "report": Stage("pathfuse.report.run:build_report", "write the benchmark tables and plots"),
}


def run_stage(stage: str, cfg: Config, kwargs: Mapping[str, Any]) -> Any:
    """Run one stage's function with the run config and its unit of work."""
    try:
        spec = STAGES[stage]
    except KeyError:
        raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}") from None
    return spec.function()(cfg, **kwargs)


def _parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` → (``key.sub``, YAML-parsed value), as Snakemake's --config does."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads "1e-3" as a string; a number is meant
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pathfuse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, spec in STAGES.items():
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        p.add_argument("--config", default="config/config.yaml", type=Path, help="run config YAML")
        p.add_argument("--set", dest="overrides", action="append", default=[], type=_parse_override,
                       metavar="KEY=VALUE", help="override a config key (dotted), e.g. tiling.target_mpp=1.0")
        p.add_argument("--log", type=Path, default=None, help="log file (default: stderr)")
        for arg, typ in spec.args:
            p.add_argument(f"--{arg}", type=typ, required=True)
    sub.add_parser("check-config", help="validate a run config and print it with defaults filled").add_argument(
        "--config", default="config/config.yaml", type=Path)
    doctor = sub.add_parser("doctor", help="preflight a run: weights, slides, tables, SLURM profile (docs/doctor.md)")
    doctor.add_argument("--config", default="config/config.yaml", type=Path, help="run config YAML")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], type=_parse_override,
                        metavar="KEY=VALUE", help="override a config key (dotted)")
    doctor.add_argument("--profile", type=Path, default=None, help="also check this SLURM workflow profile")
    doctor.add_argument("--quick", action="store_true", help="file-existence checks only (no loading)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pathfuse``."""
    from pathfuse.logs import setup_logging

    args = build_parser().parse_args(argv)
    try:
        cfg = Config.from_file(args.config, dict(getattr(args, "overrides", [])))
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
    kwargs = {arg: getattr(args, arg) for arg, _ in STAGES[args.stage].args}
    result = run_stage(args.stage, cfg, kwargs)
    logging.getLogger("pathfuse").info("%s done: %s", args.stage, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
