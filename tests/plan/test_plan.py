"""The job plan: each digest follows exactly the settings its job reads; bad inputs stop at start-up."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from support.reduced_demo import REPO

from pathfuse.config import Config, ConfigError
from pathfuse.plan import DIGEST_FORMAT, Planner

TASKS = ["brca_idc_ilc", "surv_brca", "crc100k"]


def _digests(raw: dict, edit=None) -> dict[str, str]:
    raw = copy.deepcopy(raw)
    if edit:
        edit(raw)
    plan = Planner(Config.from_dict(raw))
    out = {f"expert/{t}": plan.expert(t, "demo_vit_a").digest for t in TASKS}
    out |= {f"fuse/{t}": plan.fuse(t).digest for t in TASKS}
    out |= {f"evaluate/{t}": plan.evaluate(t).digest for t in TASKS}
    out |= {"embed_tiles": plan.embed_tiles("demo_vit_a").digest, "tile": plan.tile("demo", 0).digest,
            "embed_slides": plan.embed_slides("demo_vit_a", "demo", 0).digest, "report": plan.report().digest,
            "demo": plan.demo().digest}
    return out


def _changed(raw: dict, edit) -> set[str]:
    before, after = _digests(raw), _digests(raw, edit)
    return {job for job in before if before[job] != after[job]}


def test_digest_is_versioned_and_stable(demo_raw):
    first, second = _digests(demo_raw), _digests(demo_raw)
    assert first == second
    assert all(d.startswith(f"v{DIGEST_FORMAT}-") for d in first.values())


def test_a_per_kind_setting_changes_only_that_kinds_jobs(demo_raw):
    def tile_lr(raw):
        raw["fusion"]["logitprod"]["by_kind"]["tile_classification"]["lr"] = 0.3

    def survival_epochs(raw):
        raw["experts"]["heads"]["survival"]["epochs"] = 3

    assert _changed(demo_raw, tile_lr) == {"fuse/crc100k"}
    assert _changed(demo_raw, survival_epochs) == {"expert/surv_brca"}


ALL_METHODS = ["logitprod", "shazam", "best_val_expert", "oracle_expert", "mean_logits", "mean_probs", "stacking",
               "concat", "shazam_sum", "shazam_moe", "logitprod_converged"]


def _changed_methods(raw: dict, edit) -> set[str]:
    """The (task/method) units whose digest inside the fuse job changes with ``edit``."""
    def digests(edited: dict) -> dict[str, str]:
        plan = Planner(Config.from_dict(edited))
        return {f"{t}/{m}": p.digest for t in TASKS for m, p in plan.fuse_methods(t).items()}

    raw = copy.deepcopy(raw)
    raw["fusion"]["methods"] = ALL_METHODS
    changed = copy.deepcopy(raw)
    edit(changed)
    before, after = digests(raw), digests(changed)
    return {unit for unit in before if before[unit] != after[unit]}


def test_a_fusion_setting_changes_only_the_methods_that_read_it(demo_raw):
    def tile_lr(raw):
        raw["fusion"]["logitprod"]["by_kind"]["tile_classification"]["lr"] = 0.3

    def shrinkage(raw):  # LogitProd's, read by logitprod_converged too
        raw["fusion"].setdefault("logitprod", {})["corr_shrinkage"] = 0.5

    def shazam_lr(raw):  # the ablations read the shazam block
        raw["fusion"].setdefault("shazam", {})["lr"] = 0.1

    def selection(raw):
        raw.setdefault("report", {}).setdefault("primary_metric", {})["crc100k"] = "auroc"

    assert _changed_methods(demo_raw, tile_lr) == {"crc100k/logitprod"}
    assert _changed_methods(demo_raw, shrinkage) == {f"{t}/{m}" for t in TASKS
                                                     for m in ("logitprod", "logitprod_converged")}
    assert _changed_methods(demo_raw, shazam_lr) == {f"{t}/{m}" for t in TASKS
                                                     for m in ("shazam", "shazam_sum", "shazam_moe")}
    assert _changed_methods(demo_raw, selection) == {"crc100k/best_val_expert", "crc100k/oracle_expert"}


def test_a_method_reads_the_experts_and_only_then_the_features(demo_raw):
    plan = Planner(Config.from_dict(demo_raw))
    job = plan.fuse("crc100k").inputs
    methods = plan.fuse_methods("crc100k")
    assert methods["logitprod"].inputs == job["experts"]
    assert methods["shazam"].inputs == job["experts"] + job["features"]
    assert plan.evaluate("crc100k").inputs["fusion"] == [str(plan.layout.fusion_manifest("crc100k"))]


def test_settings_that_cannot_change_results_are_left_out(demo_raw):
    def workers_and_logs(raw):
        raw["embedding"]["num_workers"] = 7
        raw["experts"]["num_workers"] = 3
        raw["demo"]["workers"] = 1
        raw["logging"] = {"progress_interval_s": 5}

    assert _changed(demo_raw, workers_and_logs) == set()


def test_settings_that_can_change_floats_stay_in(demo_raw):
    def batch(raw):
        raw["embedding"]["batch_size"] = 17

    def bootstrap(raw):
        raw["report"]["n_bootstrap"] = 11

    assert _changed(demo_raw, batch) == {"embed_tiles", "embed_slides"}
    assert _changed(demo_raw, bootstrap) == {f"evaluate/{t}" for t in TASKS} | {"report"}


def test_fusion_methods_needing_oof_logits_change_the_experts(demo_raw):
    def no_oof(raw):
        raw["fusion"]["methods"] = ["shazam", "mean_logits", "best_val_expert"]

    changed = _changed(demo_raw, no_oof)
    assert {f"expert/{t}" for t in TASKS} <= changed and "embed_tiles" not in changed


def test_inputs_are_the_files_each_job_reads(demo_raw):
    plan = Planner(Config.from_dict(demo_raw))
    expert = plan.expert("brca_idc_ilc", "demo_vit_a").inputs
    assert expert["labels"] == ["results/demo/labels/brca_idc_ilc.csv"]
    # The demo config has 2 folds.
    assert expert["splits"] == [f"results/demo/splits/brca_idc_ilc/splits_{k}.csv" for k in range(2)]
    assert "results/tiles/demo/_skipped.parquet" in expert["features"]
    demo = plan.demo_outputs()
    assert set(expert["labels"] + expert["splits"]) <= set(demo["files"])
    assert "results/demo/slides" in demo["folders"] and "results/demo/tiles/crc100k" in demo["folders"]
    assert plan.tile("demo", 0).inputs["slides"] == ["results/demo/slides"]


# ----------------------------------------------------------------------------- bad input, at start-up
def _bags(folder: Path, ids: list[str], dim: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for slide in ids:
        with h5py.File(folder / f"{slide}.h5", "w") as fh:
            fh["features"] = np.zeros((3, dim), np.float32)
            fh["coords"] = np.zeros((3, 2), np.int64)
    return folder


def _task_data(tmp_path: Path) -> dict:
    """brca_idc_ilc's label table and two split CSVs (published format) for slides s1, s2."""
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,slide_id,label\nc1,s1,IDC\nc2,s2,ILC\n")
    for fold in range(2):
        (tmp_path / f"splits_{fold}.csv").write_text("train,val,test\nc1,c1,c2\n")
    return {"cohort": "c", "labels": str(labels), "splits": str(tmp_path / "splits_{fold}.csv"), "n_folds": 2}


def _byo_config(tmp_path: Path, folders: dict[str, Path], dims: dict[str, int], cohort: dict | None = None) -> Config:
    registry = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())
    registry.update({e: {"kind": "byo", "dim": d} for e, d in dims.items()})
    (tmp_path / "encoders.yaml").write_text(yaml.safe_dump(registry))
    return Config.from_dict({
        "results_dir": str(tmp_path / "results"), "encoders": list(dims), "tasks": ["brca_idc_ilc"],
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"),
                       "encoders": str(tmp_path / "encoders.yaml")},
        "cohorts": {"c": cohort or {}},
        "task_data": {"brca_idc_ilc": _task_data(tmp_path)},
        "embedding": {"byo": {"slides": {e: {"c": str(f)} for e, f in folders.items()}}},
    })


@pytest.mark.parametrize("case", ["missing", "empty", "wrong_dim", "no_overlap"])
def test_unusable_byo_folders_stop_before_any_job(tmp_path, case):
    a = _bags(tmp_path / "a", ["s1", "s2"], 8)
    b = tmp_path / case
    if case == "empty":
        b.mkdir()
    elif case != "missing":
        _bags(b, ["s1", "s2"] if case == "wrong_dim" else ["x1", "x2"], 5 if case == "wrong_dim" else 8)
    cfg = _byo_config(tmp_path, {"fm_a": a, "fm_b": b}, {"fm_a": 8, "fm_b": 8})
    expected = {"missing": f"encoder 'fm_b', cohort 'c': BYO feature folder {b} does not exist",
                "empty": f"no <slide_id>.h5 bags in {b}", "wrong_dim": "are 5-d", "no_overlap": "share no slide id"}
    with pytest.raises(ConfigError, match="inputs not usable") as info:
        Planner(cfg).check()
    assert expected[case] in str(info.value)
    assert "fix" in str(info.value) or "Fix" in str(info.value)


def test_manifest_naming_a_missing_slide_file_stops_before_any_job(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("slide_id,path\ns1,/nowhere/s1.svs\n")
    registry = str(REPO / "src" / "pathfuse" / "resources" / "encoders.yaml")
    cfg = Config.from_dict({
        "results_dir": str(tmp_path / "results"), "encoders": ["demo_vit_a"], "tasks": ["brca_idc_ilc"],
        "registries": {"tasks": str(REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"), "encoders": registry},
        "cohorts": {"c": {"manifest": str(manifest)}},
        "task_data": {"brca_idc_ilc": _task_data(tmp_path)},
    })
    with pytest.raises(ConfigError, match=r"slide files missing, e.g. /nowhere/s1.svs"):
        Planner(cfg).check()


def test_features_only_cohort_uses_the_slides_every_encoder_has(tmp_path, caplog):
    a = _bags(tmp_path / "a", ["s1", "s2", "s3"], 8)
    b = _bags(tmp_path / "b", ["s1", "s2"], 8)
    cfg = _byo_config(tmp_path, {"fm_a": a, "fm_b": b}, {"fm_a": 8, "fm_b": 8})
    plan = Planner(cfg)
    plan.check()
    assert "s3  no bag for fm_b" in caplog.text
    assert plan.embed_slides("fm_a", "c", 0).inputs == {"bags": [str(a / "s1.h5"), str(a / "s2.h5")]}
    assert not plan.needs_tiling("c") and cfg.n_shards("c") == 1


def test_a_tile_datasets_groups_are_an_input_and_in_the_digest_of_embed_tiles(demo_raw, tmp_path):
    groups = str(tmp_path / "crc100k_groups.csv")

    def with_groups(raw):
        raw["tile_datasets"]["demo_crc100k"]["groups"] = groups

    def with_pattern(raw):
        raw["tile_datasets"]["demo_crc100k"]["group_pattern"] = "^(TCGA-..-....)"

    assert _changed(demo_raw, with_groups) == {"embed_tiles"}
    assert _changed(demo_raw, with_pattern) == {"embed_tiles"}  # experts follow through the index's content
    raw = copy.deepcopy(demo_raw)
    with_groups(raw)
    plan = Planner(Config.from_dict(raw))
    assert groups in plan.embed_tiles("demo_vit_a").inputs["datasets"]
    assert groups in plan.tile_dataset_files("demo_vit_a", "demo_crc100k")
    assert groups not in plan.tile_dataset_files("demo_vit_a", "demo_pcam")


def test_a_replaced_image_reruns_the_embedding_of_its_dataset(tmp_path):
    """Dataset folders are inputs as folders; their listing (path, size, mtime) is in the digest."""
    import os

    from support.encoders import make_config

    images = tmp_path / "pcam"
    images.mkdir()
    for name in ("a.h5", "b.h5"):
        (images / name).write_bytes(b"x")
    cfg = make_config(tmp_path)
    before = Planner(cfg).embed_tiles("demo_vit_a")
    assert before.inputs["datasets"] == [str(images)]
    (images / "b.h5").write_bytes(b"yy")
    os.utime(images / "b.h5", ns=(0, 10**18))
    assert Planner(cfg).embed_tiles("demo_vit_a").digest != before.digest
    assert Planner(cfg).embed_tiles("demo_vit_a").digest == Planner(cfg).embed_tiles("demo_vit_a").digest
