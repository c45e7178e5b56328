"""``geo-bench train --init DIR``: an initialisation folder is checked before any work; the loading itself
(strict, into the encoder modules, named) is tested in geo-retrieval's ``test_convert_vit_r50.py``."""

from pathlib import Path

import pytest

from geo_bench.cli import main
from geo_retrieval.convert import convert

S4G = (
    Path(__file__).resolve().parents[2]
    / "geo-retrieval"
    / "tests"
    / "data"
    / "upstream"
    / "sample4geo"
    / "timm_model_test_convnext.pth"
)


class TestTrainInit:
    def test_refuses_a_trained_checkpoint_folder(self, tmp_path, caplog):
        if not S4G.is_file():
            pytest.skip("geo-retrieval's test data is not beside this package (an sdist)")
        folder = tmp_path / "s4g"
        convert("sample4geo", S4G, folder, dataset="cvusa", model="test_convnext")
        rc = main(
            ["train", "l2ltr", "--variant", "full", "--init", str(folder), "--out", str(tmp_path / "run")]
        )
        assert rc == 2
        assert "a converted 'sample4geo' checkpoint, not an initialisation (vit-r50-in21k)" in caplog.text
        assert not (tmp_path / "run").exists()

    def test_refuses_a_folder_without_manifest(self, tmp_path, caplog):
        rc = main(
            ["train", "l2ltr", "--variant", "full", "--init", str(tmp_path), "--out", str(tmp_path / "run")]
        )
        assert rc == 2 and "manifest.json" in caplog.text
