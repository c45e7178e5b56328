"""geo_synthesis.datasets.PairedImageFolder: aerial/ground pairs matched by file stem."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image

from geo_synthesis.datasets import IMAGE_EXTENSIONS, PairedImageFolder


def _write(path, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


class TestPairedImageFolder:
    def test_pairs_by_stem(self, tmp_path):
        _write(tmp_path / "aerial" / "b.png", (8, 8), 255)
        _write(tmp_path / "aerial" / "a.png", (8, 8), 0)
        _write(tmp_path / "aerial" / "only_aerial.png", (8, 8), 0)
        _write(tmp_path / "ground" / "a.jpg", (16, 4), 0)
        _write(tmp_path / "ground" / "b.PNG", (16, 4), 255)
        (tmp_path / "ground" / "notes.txt").write_text("not an image")
        data = PairedImageFolder(tmp_path)
        assert data.ids == ["a", "b"] and len(data) == 2
        sample = data[1]
        assert sample["id"] == "b"
        assert sample["aerial"].shape == (3, 8, 8) and sample["ground"].shape == (3, 4, 16)
        assert sample["aerial"].dtype == torch.float32
        assert float(sample["aerial"].min()) == 1.0 and float(data[0]["aerial"].max()) == 0.0

    def test_missing_folder_or_pairs(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="no aerial/ folder"):
            PairedImageFolder(tmp_path)
        _write(tmp_path / "aerial" / "a.png", (4, 4), 0)
        _write(tmp_path / "ground" / "b.png", (4, 4), 0)
        with pytest.raises(FileNotFoundError, match="no aerial/ground pair"):
            PairedImageFolder(tmp_path)

    def test_extensions_are_lower_case(self):
        assert ".png" in IMAGE_EXTENSIONS and all(e == e.lower() for e in IMAGE_EXTENSIONS)
