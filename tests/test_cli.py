"""The `pathfuse` command mirrors the rules: same stage table, same functions."""

from __future__ import annotations

import re

import pytest

from pathfuse.cli import STAGES, build_parser, main


def test_every_stage_target_resolves_to_a_function(repo):
    missing = []
    for name, stage in STAGES.items():
        try:
            assert callable(stage.function())
        except (ImportError, AttributeError) as err:
            missing.append(f"{name}: {err}")
    assert not missing, missing


def test_every_rule_runs_a_known_stage(repo):
    used = set()
    for smk in (repo / "workflow" / "rules").glob("*.smk"):
        used |= set(re.findall(r'stage="([a-z-]+)"', smk.read_text()))
    assert used and used <= set(STAGES), used - set(STAGES)
    assert set(STAGES) <= used, f"stages without a rule: {set(STAGES) - used}"


def test_cli_requires_the_unit_of_work():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tile", "--cohort", "demo"])  # --shard missing
    args = build_parser().parse_args(["tile", "--cohort", "demo", "--shard", "1", "--set", "tiling.tile_px=128"])
    assert args.shard == 1 and args.overrides == [("tiling.tile_px", 128)]
    args = build_parser().parse_args(
        ["fuse", "--task", "t", "--set", "fusion.lr=1e-3", "--set", "tiling.on_slide_error=skip"]
    )
    assert args.overrides == [("fusion.lr", 0.001), ("tiling.on_slide_error", "skip")]


def test_check_config_reports_a_bad_key(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert main(["check-config"]) == 0
    assert main(["tile", "--cohort", "demo", "--shard", "0", "--set", "tiling.min_tissue=3"]) == 2
    assert "tiling.min_tissue: 3 is not allowed" in capsys.readouterr().err
