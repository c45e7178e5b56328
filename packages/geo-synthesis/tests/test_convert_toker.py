"""The ``toker`` converter onto the toker21 recipe, against outputs of Toker et al.'s own code.

Fixtures: ``geo-retrieval/tests/data/upstream/toker`` (README there): ``state_spec.json`` (upstream's
keys and shapes), ``parity.npz`` (upstream's G / D / R outputs) and ``make_fixtures.py``, whose
``fixture_state`` rebuilds the deterministic upstream checkpoint (full-width G and D, the street
ResNet-34, SAFA heads at 32x128) instead of committing 80 MB. Lives here, not in geo-retrieval,
because the toker21 recipe is geo-synthesis'.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_retrieval import CorruptCheckpointError
from geo_retrieval.convert import StateDictMismatchError, convert, load_converted, read_manifest

DATA = Path(__file__).resolve().parents[2] / "geo-retrieval" / "tests" / "data" / "upstream" / "toker"
S4G = DATA.parent / "sample4geo" / "timm_model_test_convnext.pth"
SIZE = (32, 128)


def _fixtures():
    if not (DATA / "make_fixtures.py").is_file():
        pytest.skip("geo-retrieval's test data is not beside this package (an sdist)")
    spec = importlib.util.spec_from_file_location("toker_make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _upstream_checkpoint(path: Path, drop: str | None = None) -> Path:
    mf = _fixtures()
    spec = json.loads((DATA / "state_spec.json").read_text())
    ckpt: dict = {
        comp: {
            f"module.{k}": torch.from_numpy(v) for k, v in mf.fixture_state(spec[comp]).items() if k != drop
        }
        for comp in mf.COMPONENTS
    }
    ckpt.update(last_epoch=187, best_acc=61.2, optimizer_G_dict={"state": {}, "param_groups": []})
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toker")
    src = _upstream_checkpoint(tmp / "rgan_best_ckpt.pth")
    out = tmp / "converted"
    written = convert("toker", src, out, image_size=SIZE)
    return src, out, written


class TestConvertTokerParity:
    def test_reproduces_upstream_outputs(self, converted):
        _, out, _ = converted
        _, recipe, model = load_converted(out)
        model.eval()
        aerial, street = (torch.from_numpy(x) for x in _fixtures().fixture_inputs())
        up = np.load(DATA / "parity.npz")
        with torch.no_grad():
            fake, _ = model.generator(aerial)
            ground_desc, aerial_desc = model(street, aerial)
            d_real = model.discriminator(aerial, street)
            d_fake = model.discriminator(aerial, fake)
        # measured: G and D 0.0, descriptors <= 4.1e-8
        for name, ours in (("fake", fake), ("d_real", d_real), ("d_fake", d_fake)):
            assert float(np.abs(ours.numpy() - up[name]).max()) <= 1e-4, name
        assert ground_desc.shape == (2, 2048) and aerial_desc.shape == (2, 2048)
        assert float(np.abs(ground_desc.numpy() - up["ground"]).max()) <= 1e-4
        assert float(np.abs(aerial_desc.numpy() - up["aerial"]).max()) <= 1e-4
        assert recipe.name == "toker21" and recipe.variant == "full" and tuple(recipe.ground_size) == SIZE

    def test_manifest_records_the_legacy_polar_preset(self, converted):
        src, out, written = converted
        assert {"model", "recipe", "manifest", "generator", "discriminator", "retrieval"} <= set(written)
        manifest = read_manifest(out)
        pre = manifest.preprocessing
        assert manifest.source_kind == "toker" and manifest.source_file == src.name
        assert pre.reader == "opencv_torchvision" and pre.resize == "cv2.INTER_CUBIC"
        assert pre.polar is not None and pre.polar["preset"] == "toker_cvusa_legacy@1"
        assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
        assert manifest.descriptor_dim == 2048 and manifest.source_extra["last_epoch"] == 187
        assert any("112x616" in note for note in manifest.notes)  # not the paper size: said so


class TestConvertTokerFaults:
    def test_another_methods_checkpoint_names_file_and_keys(self, tmp_path):
        if not S4G.is_file():
            pytest.skip("no sample4geo fixture")
        with pytest.raises(
            ValueError, match=r"timm_model_test_convnext\.pth.*retriebal_model_dict.*keys: \['logit_scale'"
        ):
            convert("toker", S4G, tmp_path / "out")

    def test_truncated_file_is_named(self, converted, tmp_path):
        data = converted[0].read_bytes()
        bad = tmp_path / "truncated.pth"
        bad.write_bytes(data[: len(data) // 3])
        with pytest.raises(CorruptCheckpointError, match=r"truncated\.pth"):
            convert("toker", bad, tmp_path / "out")

    def test_missing_key_is_named(self, tmp_path):
        src = _upstream_checkpoint(tmp_path / "partial.pth", drop="sa2.b2")
        with pytest.raises(StateDictMismatchError, match=r"partial\.pth.*1 missing \(sa2\.b2\)"):
            convert("toker", src, tmp_path / "out", image_size=SIZE)
        assert not (tmp_path / "out").exists()

    def test_unknown_size_asks_for_image_size(self, converted, tmp_path):
        with pytest.raises(ValueError, match=r"N = 64 .*--image-size"):
            convert("toker", converted[0], tmp_path / "out")
