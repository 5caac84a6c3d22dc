"""Cohort listing: glob and manifest input, id safety, duplicates, shards, mpp overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathfuse.config import CohortSpec
from pathfuse.slides.cohort import list_slides, scan_slides, shard_slides
from pathfuse.slides.errors import CohortError
from pathfuse.slides.mpp import read_mpp_overrides


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_glob_lists_files_sorted_with_stem_ids(tmp_path):
    touch(tmp_path, "b.svs", "a.tiff", "c.mrxs")
    (tmp_path / "c").mkdir()  # a MIRAX data folder: not a slide
    slides = list_slides(CohortSpec(name="x", slides=str(tmp_path / "*")))
    assert list(slides.columns) == ["slide_id", "path", "mpp"]
    assert list(slides["slide_id"]) == ["a", "b", "c"]
    assert slides["path"].iloc[0] == str(tmp_path / "a.tiff")
    assert slides["mpp"].isna().all()


def test_manifest_resolves_relative_paths_and_reads_mpp(tmp_path):
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("slide_id,path,mpp\nz,../s/z.svs,0.25\ny,/abs/y.svs,\n")
    slides = list_slides(CohortSpec(name="x", manifest=str(manifest)))
    assert list(slides["slide_id"]) == ["y", "z"]
    assert slides["path"].tolist() == ["/abs/y.svs", str(manifest.parent / "../s/z.svs")]
    assert np.isnan(slides["mpp"].iloc[0]) and slides["mpp"].iloc[1] == 0.25


@pytest.mark.parametrize("text, message", [
    ("slide_id,file\na,a.svs\n", "missing column"),
    ("slide_id,path,mpp\na,a.svs,fast\n", "a='fast'"),
    ("slide_id,path\na,\n", "empty slide_id or path"),
])
def test_bad_manifest_is_refused_naming_the_problem(tmp_path, text, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(CohortError, match=message) as info:
        list_slides(CohortSpec(name="x", manifest=str(manifest)))
    assert str(manifest) in str(info.value)


def test_missing_manifest_names_the_config_key(tmp_path):
    with pytest.raises(CohortError, match=r"cohorts\.x\.manifest"):
        list_slides(CohortSpec(name="x", manifest=str(tmp_path / "none.csv")))


def test_unsafe_and_duplicate_ids_are_errors_naming_them(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("slide_id,path\n../evil,e.svs\nA1,a.svs\na1,b.svs\nok,ok.svs\n_x,x.svs\n")
    spec = CohortSpec(name="x", manifest=str(manifest))
    with pytest.raises(CohortError) as info:
        list_slides(spec)
    for name in ("'../evil'", "'A1'", "'a1'", "'_x'"):
        assert name in str(info.value)
    assert "'ok'" not in str(info.value)
    slides, rejected = scan_slides(spec)
    assert list(slides["slide_id"]) == ["ok"]
    assert dict(zip(rejected["slide_id"], rejected["cause"], strict=True)) == {
        "../evil": "unsafe_id", "A1": "duplicate_id", "a1": "duplicate_id", "_x": "unsafe_id"}


def test_duplicate_stems_across_folders_in_a_glob(tmp_path):
    touch(tmp_path / "one", "s1.svs")
    touch(tmp_path / "two", "s1.tiff")
    with pytest.raises(CohortError, match=r"'s1'.*2 files"):
        list_slides(CohortSpec(name="x", slides=str(tmp_path / "*" / "*")))


def test_shards_are_contiguous_chunks_covering_every_slide():
    slides = pd.DataFrame({"slide_id": [f"s{i:02d}" for i in range(10)], "path": "p", "mpp": np.nan})
    parts = [shard_slides(slides, i, 3) for i in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert pd.concat(parts)["slide_id"].tolist() == slides["slide_id"].tolist()
    assert shard_slides(slides.iloc[:1], 2, 3).empty
    with pytest.raises(ValueError, match="3 shard"):
        shard_slides(slides, 3, 3)


def test_mpp_override_table(tmp_path):
    table = tmp_path / "o.csv"
    table.write_text("slide_id,mpp\na,0.25\nb, 0.5\n")
    assert read_mpp_overrides(table, "x") == {"a": 0.25, "b": 0.5}
    assert read_mpp_overrides(None, "x") == {}
    table.write_text("slide_id,mpp\na,0\n")
    with pytest.raises(CohortError, match="a='0'"):
        read_mpp_overrides(table, "x")
    table.write_text("slide_id,mpp\na,0.2\na,0.3\n")
    with pytest.raises(CohortError, match="more than once"):
        read_mpp_overrides(table, "x")
    with pytest.raises(CohortError, match=r"cohorts\.x\.mpp_overrides"):
        read_mpp_overrides(tmp_path / "none.csv", "x")
