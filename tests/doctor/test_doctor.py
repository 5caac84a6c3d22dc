"""``pathfuse doctor``: the demo config passes (OK/PENDING); each broken input is a named FAIL with its fix."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import tifffile
import yaml
from support.encoders import REPO, write_slide

from pathfuse.cli import main
from pathfuse.config import Config
from pathfuse.doctor import FAIL, OK, run_checks
from pathfuse.doctor.encoders import cached_sha256

DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
REGISTRY = yaml.safe_load((REPO / "src" / "pathfuse" / "resources" / "encoders.yaml").read_text())


def _write_config(tmp_path: Path, raw: dict, **extra_encoders: dict) -> Path:
    registry = tmp_path / "encoders.yaml"
    registry.write_text(yaml.safe_dump({**REGISTRY, **extra_encoders}))
    tasks = REPO / "src" / "pathfuse" / "resources" / "tasks.yaml"
    raw = {**raw, "results_dir": str(tmp_path / "results"),
           "registries": {"tasks": str(tasks), "encoders": str(registry)}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _slide_task_config(tmp_path: Path, slides: str, **changes: object) -> dict:
    """One slide task (brca_idc_ilc) on cohort ``c`` with a label table and 2 split files."""
    ids = [Path(p).stem for p in sorted(Path(slides).parent.glob("*.tiff"))] or ["s0", "s1"]
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\n" + "".join(f"{s},{'IDC' if i % 2 else 'ILC'}\n" for i, s in enumerate(ids)))
    for fold in range(2):
        (tmp_path / f"splits_{fold}.csv").write_text(f"train,val,test\n{ids[0]},,{ids[-1]}\n")
    raw = {"seed": 1, "demo": {"enabled": False}, "encoders": ["demo_vit_a"], "tasks": ["brca_idc_ilc"],
           "cohorts": {"c": {"slides": slides}},
           "task_data": {"brca_idc_ilc": {"cohort": "c", "labels": str(labels), "n_folds": 2,
                                          "splits": str(tmp_path / "splits_{fold}.csv")}},
           "embedding": {"batch_size": 4, "num_workers": 0}}
    raw.update(changes)
    return raw


def _run(capsys, config: Path) -> tuple[int, str]:
    code = main(["doctor", "--config", str(config)])
    return code, " ".join(capsys.readouterr().out.split())  # column widths vary with the rows


def test_demo_config_is_ok_or_pending(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/demo here: the demo's inputs are PENDING
    code, out = _run(capsys, _write_config(tmp_path, DEMO))
    assert code == 0, out
    assert "PENDING cohort demo" in out and out.endswith(" 0 FAIL")
    assert "loads strictly; batch 64×64² on cpu fp32: [64, 48]" in out


def test_missing_weight_file_fails_with_where_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {**DEMO, "encoders": ["uni"], "embedding": {**DEMO["embedding"], "weights_dir": str(tmp_path / "w")}}
    code, out = _run(capsys, _write_config(tmp_path, raw))
    assert code == 1
    assert "FAIL encoder uni weight file" in out and str(tmp_path / "w" / "uni" / "pytorch_model.bin") in out
    assert "fix: encoder 'uni'" in out and "https://huggingface.co/MahmoodLab/UNI" in out


def test_byo_folder_of_the_wrong_dim_fails(tmp_path, capsys):
    bags = tmp_path / "bags"
    bags.mkdir()
    for name in ("s0", "s1"):
        with h5py.File(bags / f"{name}.h5", "w") as fh:
            fh["features"] = np.zeros((5, 8), dtype=np.float32)
            fh["coords"] = np.zeros((5, 2), dtype=np.int64)
    raw = _slide_task_config(tmp_path, str(tmp_path / "none" / "*.tiff"), encoders=["my_fm"])
    raw["embedding"]["byo"] = {"slides": {"my_fm": {"c": str(bags)}}}
    code, out = _run(capsys, _write_config(tmp_path, raw, my_fm={"kind": "byo", "dim": 16}))
    assert code == 1
    assert "FAIL cohort c/my_fm (byo)" in out and "are 8-d" in out and "the encoder registry says dim 16" in out
    assert "point the encoder at the right folder or fix 'dim'" in out
    assert "fix: see embedding.byo.slides.my_fm.c" in out


def test_slide_without_mpp_fails_naming_the_override(tmp_path, capsys):
    write_slide(tmp_path / "slides" / "good.tiff")
    image = np.full((512, 512, 3), 200, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "slides" / "nompp.tiff", image, tile=(256, 256), photometric="rgb")
    raw = _slide_task_config(tmp_path, str(tmp_path / "slides" / "*.tiff"))
    code, out = _run(capsys, _write_config(tmp_path, raw))
    assert code == 1
    assert "OK cohort c/good" in out
    assert "FAIL cohort c/nompp" in out and "mpp" in out
    assert "fix: add nompp to the mpp override table (cohorts.c.mpp_overrides" in out


def test_quick_checks_do_not_load_and_agree_on_existence(tmp_path):
    write_slide(tmp_path / "slides" / "a.tiff")
    raw = _slide_task_config(tmp_path, str(tmp_path / "slides" / "*.tiff"))
    cfg = Config.from_file(_write_config(tmp_path, raw))
    quick = run_checks(cfg, deep=False)
    assert [r.status for r in quick] == [OK, OK, OK]
    assert "loads strictly" not in " ".join(r.detail for r in quick)
    deep = run_checks(cfg, deep=True)
    assert {r.status for r in deep} == {OK} and len(deep) > len(quick)


def test_label_table_of_another_cohort_fails(tmp_path):
    write_slide(tmp_path / "slides" / "a.tiff")
    raw = _slide_task_config(tmp_path, str(tmp_path / "slides" / "*.tiff"))
    (tmp_path / "labels.csv").write_text("slide_id,label\nTCGA-1,IDC\n")
    rows = run_checks(Config.from_file(_write_config(tmp_path, raw)), deep=True)
    failed = [r for r in rows if r.status == FAIL]
    assert [r.target for r in failed] == ["brca_idc_ilc"] and "none of the 1 slide ids" in failed[0].detail


def test_weight_hash_is_cached_by_size_and_mtime(tmp_path):
    cfg = Config.from_file(_write_config(tmp_path, _slide_task_config(tmp_path, str(tmp_path / "*.tiff"))))
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    first = cached_sha256(cfg, weights)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    cache = tmp_path / "results" / ".pathfuse" / "sha256_cache.json"
    assert cache.is_file() and first in cache.read_text()


def test_slurm_profile_is_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path, DEMO)
    assert main(["doctor", "--quick", "--config", str(config), "--profile",
                 str(REPO / "workflow" / "profiles" / "slurm")]) == 0
    assert "OK slurm profile" in " ".join(capsys.readouterr().out.split())
    broken = tmp_path / "profile"
    broken.mkdir()
    (broken / "config.yaml").write_text("executor: slurm\njobs: 10\n")
    assert main(["doctor", "--quick", "--config", str(config), "--profile", str(broken)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "missing setting(s): latency-wait" in out and "set-resources.embed_slides lacks" in out
