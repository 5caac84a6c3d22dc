"""Patient-level folds from every split source, val == test refusal/carving, inner folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.synthetic_experts import make_config, write_split_files

from pathfuse.data.splits import SplitError, carve, make_folds, patient_kfold


def samples_of(
    n_patients: int, slides_per_patient: int = 1, n_classes: int = 2, survival: bool = False
) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        for s in range(slides_per_patient):
            rows.append(
                {
                    "sample_id": f"S{p:03d}_{s}",
                    "patient_id": f"P{p:03d}",
                    "slide_ids": [f"S{p:03d}_{s}"],
                    "label": -1 if survival else p % n_classes,
                    "time": float(p + 1) if survival else np.nan,
                    "event": (p // 2) % 2 if survival else -1,
                }
            )
    return pd.DataFrame(rows)


def patients(samples: pd.DataFrame, ids) -> set[str]:
    return set(samples.set_index("sample_id").loc[list(ids), "patient_id"])


def test_kfold_is_patient_level_stratified_and_seeded(tmp_path):
    cfg = make_config(tmp_path, ["tbin"])
    task = cfg.task("tbin")
    samples = samples_of(30, slides_per_patient=2)
    folds = make_folds(cfg, task, samples)
    assert len(folds) == 3
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(samples["sample_id"]) and sum(map(len, tests)) == len(samples)
    for f in folds:
        assert f.carve_val and f.val
        groups = [patients(samples, ids) for ids in (f.train, f.val, f.test)]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        labels = samples.set_index("sample_id").loc[list(f.test), "label"]
        assert abs(labels.mean() - 0.5) < 0.15  # stratified
    again = make_folds(cfg, task, samples.sample(frac=1, random_state=3).sort_values("sample_id"))
    assert again == folds
    other_seed = make_folds(make_config(tmp_path, ["tbin"], seed=8), task, samples)
    assert [f.test for f in other_seed] != [f.test for f in folds]


def test_csv_split_with_val_equal_to_test_is_refused_or_carved(tmp_path):
    table = pd.DataFrame({"case_id": [f"P{p:03d}" for p in range(40)]})
    write_split_files(tmp_path, "surv", table, 2, val_equals_test=True)
    samples = samples_of(40, survival=True)
    cfg = make_config(tmp_path, ["tsurv"])
    with pytest.raises(
        SplitError, match=r"tsurv fold 0: validation set equals the test set.*carve_val: true"
    ):
        make_folds(cfg, cfg.task("tsurv"), samples)
    cfg = make_config(tmp_path, ["tsurv"], {"carve_val": True})
    folds = make_folds(cfg, cfg.task("tsurv"), samples)
    for f in folds:
        assert f.carve_val and f.val and not set(f.val) & set(f.test) and not set(f.val) & set(f.train)
        events = samples.set_index("sample_id").loc[list(f.val), "event"]
        assert 0 < events.sum() < len(events)  # stratified on the event indicator


def test_csv_split_with_its_own_validation_is_used_as_is(tmp_path):
    table = pd.DataFrame({"case_id": [f"P{p:03d}" for p in range(40)]})
    write_split_files(tmp_path, "surv", table, 2)
    cfg = make_config(tmp_path, ["tsurv"])
    samples = samples_of(40, survival=True)
    folds = make_folds(cfg, cfg.task("tsurv"), samples)
    split0 = pd.read_csv(tmp_path / "splits_surv_0.csv", dtype=str)
    assert not folds[0].carve_val
    assert patients(samples, folds[0].val) == set(split0["val"].dropna()) - {""}


def test_csv_split_resolves_case_ids_to_all_their_slides_and_refuses_leaks(tmp_path):
    pd.DataFrame(
        {
            "train": ["P000", "P001", "P002", "P003"],
            "val": ["P004", "", "", ""],
            "test": ["P005", "S000_1", "", ""],
        }
    ).to_csv(tmp_path / "splits_multi_0.csv", index=False)
    pd.DataFrame(
        {"train": ["P000", "P001", "P002", "P003"], "val": ["P004", "", "", ""], "test": ["P005", "", "", ""]}
    ).to_csv(tmp_path / "splits_multi_1.csv", index=False)
    cfg = make_config(tmp_path, ["tmulti"])
    samples = samples_of(6, slides_per_patient=2, n_classes=3)
    with pytest.raises(SplitError, match=r"P000.*both train and test"):
        make_folds(cfg, cfg.task("tmulti"), samples)
    pd.DataFrame(
        {
            "train": ["P000", "P001", "P002", "P003"],
            "val": ["P004", "", "", ""],
            "test": ["P005", "unknown", "", ""],
        }
    ).to_csv(tmp_path / "splits_multi_0.csv", index=False)
    folds = make_folds(cfg, cfg.task("tmulti"), samples)
    assert set(folds[0].test) == {"S005_0", "S005_1"} and len(folds[0].train) == 8


def test_official_and_holdout_tile_splits(tmp_path):
    cfg = make_config(tmp_path, ["ttile", "tholdout"], {"val_fraction": 0.15})
    samples = samples_of(100, n_classes=3).assign(
        official_split=["train"] * 60 + ["test"] * 40, patient_id=lambda d: d["sample_id"]
    )
    (fold,) = make_folds(cfg, cfg.task("ttile"), samples)
    assert fold.carve_val and len(fold.test) == 40 and len(fold.val) == 9  # 15 % of 60, carved
    with pytest.raises(SplitError, match="no 'test' tiles"):
        make_folds(cfg, cfg.task("ttile"), samples.assign(official_split="train"))
    (hold,) = make_folds(cfg, cfg.task("tholdout"), samples)
    assert len(hold.test) == 25 and hold.carve_val


def test_inner_folds_hold_out_every_sample_exactly_once_by_patient():
    samples = samples_of(24, slides_per_patient=2)
    parts = patient_kfold(samples, 3, seed=1, stratify_by="label")
    held = [set(h) for _, h in parts]
    assert set().union(*held) == set(samples["sample_id"]) and sum(map(len, held)) == len(samples)
    for fit_ids, held_ids in parts:
        assert not patients(samples, fit_ids) & patients(samples, held_ids)
    with pytest.raises(SplitError, match="at least 5 patients"):
        patient_kfold(samples_of(3), 5, seed=0, stratify_by="label")


def test_carve_keeps_every_class_in_the_rest():
    samples = samples_of(20, n_classes=4)
    rest, val = carve(samples, list(samples["sample_id"]), 0.5, seed=0, stratify_by="label")
    labels = samples.set_index("sample_id")["label"]
    assert set(labels[list(rest)]) == {0, 1, 2, 3} and len(val) >= 4
