"""Seeds, digests and device choice: pinned values, so a refactor cannot move a run's numbers unnoticed.

The pinned numbers are what the functions returned before they moved into
:mod:`pathfuse.reproducibility`; a change here changes tilings, splits, trained weights or the
rerun decisions of every existing results folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pathfuse.plan import settings_digest
from pathfuse.reproducibility import canonical_json, choose_device, derive_seed, json_digest


def test_training_seeds_are_pinned():
    assert derive_seed(7, "brca", "uni", 0) == 96262998
    assert derive_seed(0, "t", "kfold") == 182195902
    assert all(0 <= derive_seed(s, "x") < 2**31 for s in range(50))


def test_encoder_and_tiling_seeds_keep_their_width_and_separator():
    # Demo encoders' random weights (63 bits, ":"-joined) and slides' tile sampling (64 bits).
    assert derive_seed(7, "encoder", "demo_vit_a", bits=63, separator=":") == 4352086209536387592
    assert derive_seed(0, "encoder", "x", bits=63, separator=":") == 7673712721103693318
    assert derive_seed(7, "tiling", "tcga", "S1", bits=64) == 4060110806533133246
    assert derive_seed(0, "tiling", "c", "s", bits=64) == 16121179669511708068


def test_evaluation_bootstrap_seeds_are_the_training_form():
    # Since the seed functions were unified (before: CRC32-based, other resamples, CIs and p-values).
    assert derive_seed(7, "brca", "bootstrap", 0) == 1750508012
    assert derive_seed(2024, "t", "m", "pooled") == 1610936712


def test_seed_width_is_checked():
    with pytest.raises(ValueError, match="1 to 256"):
        derive_seed(1, bits=0)


def test_digests_ignore_key_order_and_are_pinned():
    payload = {"b": [1, 2.5], "a": {"z": None, "y": "x"}}
    assert json_digest(payload) == json_digest(dict(reversed(payload.items())))
    assert json_digest(payload) == "eb854ee2770cb472beca324652606dc93a7c16aacc1681597fb475c074a7b62e"
    assert settings_digest(payload) == "v1-a46b5123965dc730800b"
    with_path = {"path": Path("a/b"), "n": 1}
    assert canonical_json(with_path, compact=True) == '{"n":1,"path":"a/b"}'
    assert json_digest(with_path) == "b80e17073a4fd8c9b948a09338722bf3273d7c31319135e7138303683383deaa"
    assert json_digest(with_path, compact=True) == "233d28d49a85e87daee0fc4ab8c40c53d28a92a7b8411e7fd0660c7abafe679b"


def test_device_choice():
    def never_asked() -> bool:
        raise AssertionError("cpu needs no GPU check")

    assert choose_device("cpu", "x.device", never_asked) == "cpu"
    assert choose_device("auto", "x.device", lambda: True) == "cuda"
    assert choose_device("auto", "x.device", lambda: False) == "cpu"
    assert choose_device("cuda", "x.device", lambda: True) == "cuda"
    with pytest.raises(RuntimeError, match=r"experts\.device is 'cuda' but torch sees no GPU"):
        choose_device("cuda", "experts.device", lambda: False)


def test_the_module_does_not_import_torch():
    # The job plan (imported by the Snakefile at start-up) uses the digests; torch would slow every start.
    code = "import sys, pathfuse.reproducibility; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
