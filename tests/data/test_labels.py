"""Samples of a task: joins labels with features, drops skipped slides, clear errors on bad labels."""

from __future__ import annotations

import pandas as pd
import pytest
from support.labels import write_cohort, write_labels
from support.synthetic_experts import ENCODER, make_config, tile_dataset

from pathfuse.data.labels import LabelError, load_samples


def test_slide_samples_drop_skipped_and_failed_slides_and_record_them(tmp_path):
    write_cohort(tmp_path)
    rows = [
        {"slide_id": f"S{i:03d}", "case_id": f"P{i // 2}", "label": ["neg", "pos"][i % 2]} for i in range(12)
    ]
    write_labels(
        tmp_path,
        [
            *rows,
            {"slide_id": "S098", "case_id": "P98", "label": "neg"},
            {"slide_id": "S099", "case_id": "P99", "label": "pos"},
        ],
    )
    cfg = make_config(tmp_path, ["tbin"])
    samples = load_samples(cfg, cfg.task("tbin"), ENCODER)
    assert list(samples.columns) == ["sample_id", "patient_id", "slide_ids", "label", "time", "event"]
    assert len(samples) == 12 and samples["label"].tolist() == [0, 1] * 6
    assert samples["slide_ids"][0] == ["S000"] and samples["patient_id"][3] == "P1"
    dropped = samples.attrs["dropped"]
    assert {k: v["ids"] for k, v in dropped.items()} == {
        "skipped at tiling: no tissue": ["S098"],
        "embedding error: corrupt (demo_vit_a)": ["S099"],
    }


def test_patient_bags_group_a_patients_slides(tmp_path):
    write_cohort(tmp_path)
    write_labels(
        tmp_path,
        [
            {"slide_id": f"S{i:03d}", "case_id": f"P{i // 3}", "label": ["neg", "pos"][(i // 3) % 2]}
            for i in range(12)
        ],
    )
    cfg = make_config(tmp_path, ["tbin"], {"bag_unit": "patient"})
    samples = load_samples(cfg, cfg.task("tbin"), ENCODER)
    assert samples["sample_id"].tolist() == ["P0", "P1", "P2", "P3"]
    assert samples["slide_ids"][1] == ["S003", "S004", "S005"] and samples["label"].tolist() == [0, 1, 0, 1]
    write_labels(
        tmp_path,
        [{"slide_id": f"S{i:03d}", "case_id": "P0", "label": ["neg", "pos"][i % 2]} for i in range(4)],
    )
    with pytest.raises(LabelError, match=r"slides carry different labels.*P0"):
        load_samples(cfg, cfg.task("tbin"), ENCODER)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"slide_id": "S000", "label": "neg"}, {"slide_id": "S001", "label": "maybe"}],
            r"task tbin: unknown class\(es\) \['maybe'\].*S001",
        ),
        (
            [{"slide_id": "S000", "label": "neg"}, {"slide_id": "S001", "label": None}],
            r"missing 'label' label.*S001",
        ),
        ([{"slide_id": "X1", "label": "neg"}], r"no labelled slide .* has features of every encoder \(demo_vit_a\)"),
        ([{"slide_id": "S000", "label": "neg"}, {"slide_id": "S000", "label": "pos"}], "listed twice"),
        ([{"slide": "S000", "label": "neg"}], r"lacks column\(s\) \['slide_id'\]"),
    ],
)
def test_bad_labels_fail_naming_task_and_samples(tmp_path, rows, message):
    write_cohort(tmp_path)
    write_labels(tmp_path, rows)
    cfg = make_config(tmp_path, ["tbin"])
    with pytest.raises(LabelError, match=message):
        load_samples(cfg, cfg.task("tbin"), ENCODER)


def test_skip_policy_drops_and_records_bad_labels(tmp_path):
    write_cohort(tmp_path)
    write_labels(
        tmp_path,
        [
            {"slide_id": "S000", "label": "neg"},
            {"slide_id": "S001", "label": "maybe"},
            {"slide_id": "S002", "label": "pos"},
            {"slide_id": "X9", "label": "pos"},
        ],
    )
    cfg = make_config(tmp_path, ["tbin"], {"on_bad_input": "skip"})
    samples = load_samples(cfg, cfg.task("tbin"), ENCODER)
    assert samples["sample_id"].tolist() == ["S000", "S002"]
    dropped = {reason: v["ids"] for reason, v in samples.attrs["dropped"].items()
               if not reason.startswith("unlabelled")}
    assert sorted(ids[0] for ids in dropped.values()) == ["S001", "X9"]


def test_labelled_slides_without_features_are_left_out_and_recorded(tmp_path):
    """A label table naming slides the cohort lacks (PORPOISE tables list every TCGA slide) loses them, recorded."""
    write_cohort(tmp_path)
    write_labels(tmp_path, [{"slide_id": "S000", "label": "neg"}, {"slide_id": "X999", "label": "pos"}])
    cfg = make_config(tmp_path, ["tbin"])
    samples = load_samples(cfg, cfg.task("tbin"), ENCODER)
    assert samples["sample_id"].tolist() == ["S000"]
    dropped = samples.attrs["dropped"]
    assert dropped["labelled, but no slide of cohort 'syn' has this id (no features of any encoder)"]["ids"] == ["X999"]
    assert "S001" in dropped["unlabelled: not in the label table"]["ids"]


def test_survival_labels_and_their_errors(tmp_path):
    write_cohort(tmp_path, n=4)
    rows = [
        {"case_id": f"P{i}", "slide_id": f"S{i:03d}", "survival_months": 10.0 + i, "censorship": i % 2}
        for i in range(4)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "labels_surv.csv", index=False)
    cfg = make_config(tmp_path, ["tsurv"])
    samples = load_samples(cfg, cfg.task("tsurv"), ENCODER)
    assert samples["event"].tolist() == [1, 0, 1, 0] and samples["time"].tolist() == [10, 11, 12, 13]
    assert (samples["label"] == -1).all()
    rows[1]["survival_months"] = float("nan")
    pd.DataFrame(rows).to_csv(tmp_path / "labels_surv.csv", index=False)
    with pytest.raises(LabelError, match=r"missing, non-numeric or negative 'survival_months'.*S001"):
        load_samples(cfg, cfg.task("tsurv"), ENCODER)
    rows[1]["survival_months"], rows[2]["censorship"] = 3.0, 2
    pd.DataFrame(rows).to_csv(tmp_path / "labels_surv.csv", index=False)
    with pytest.raises(LabelError, match=r"'censorship' not 0 or 1 \(1 = censored\).*S002"):
        load_samples(cfg, cfg.task("tsurv"), ENCODER)


def test_numeric_classes_match_however_the_csv_writes_them(tmp_path):
    write_cohort(tmp_path, n=3)
    write_labels(
        tmp_path,
        [
            {"slide_id": "S000", "label": 1.0},
            {"slide_id": "S001", "label": 0},
            {"slide_id": "S002", "label": " 1"},
        ],
    )
    cfg = make_config(tmp_path, ["tbin"])
    task = cfg.task("tbin").__class__(**{**cfg.task("tbin").__dict__, "classes": (0, 1)})
    assert load_samples(cfg, task, ENCODER)["label"].tolist() == [1, 0, 1]


def test_tile_samples_come_from_the_feature_index(tmp_path):
    index = tile_dataset(tmp_path, n=30)
    cfg = make_config(tmp_path, ["ttile"])
    samples = load_samples(cfg, cfg.task("ttile"), ENCODER)
    assert len(samples) == 30 and set(samples["official_split"]) == {"train", "val", "test"}
    merged = samples.merge(index, on="sample_id")
    assert (merged["row_x"] == merged["row_y"]).all() and (merged["patient_id"] == merged["group"]).all()
    assert samples["label"].tolist()[:3] == [0, 1, 2]
