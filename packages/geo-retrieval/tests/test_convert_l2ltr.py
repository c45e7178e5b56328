"""The ``l2ltr`` converter onto the l2ltr recipe (full), against descriptors of L2LTR's own model code.

Fixtures: ``tests/data/upstream/l2ltr`` (README there): ``state_spec.json`` (upstream's keys and shapes
at a reduced ViT config), ``parity.npz`` (upstream's descriptors) and ``make_fixtures.py``, whose
``fixture_state`` rebuilds the deterministic upstream checkpoint.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_retrieval import CorruptCheckpointError
from geo_retrieval.convert import StateDictMismatchError, convert, load_converted, read_manifest
from geo_retrieval.convert.l2ltr import l2ltr_preprocessing

DATA = Path(__file__).parent / "data" / "upstream" / "l2ltr"
S4G = Path(__file__).parent / "data" / "upstream" / "sample4geo" / "timm_model_test_convnext.pth"


def _fixtures():
    spec = importlib.util.spec_from_file_location("l2ltr_make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(path: Path, drop: str | None = None) -> Path:
    mf = _fixtures()
    spec = json.loads((DATA / "state_spec.json").read_text())
    ckpt: dict = {
        view: {
            f"module.{k}": torch.from_numpy(v)
            for k, v in mf.fixture_state(spec[view], view).items()
            if k != drop
        }
        for view in mf.VIEWS
    }
    ckpt["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("l2ltr")
    src = _checkpoint(tmp / "model_checkpoint.pth")
    out = tmp / "converted"
    convert("l2ltr", src, out, num_heads=4, image_size=(32, 128))
    return src, out


class TestConvertL2LTR:
    def test_reproduces_upstream_descriptors(self, converted):
        _, out = converted
        _, recipe, model = load_converted(out)
        model.eval()
        ground, aerial = (torch.from_numpy(x) for x in _fixtures().fixture_inputs())
        with torch.no_grad():
            g, a = model(ground, aerial)
        up = np.load(DATA / "parity.npz")
        # measured: ground 2.5e-7, aerial 4.2e-7
        assert float(np.abs(g.numpy() - up["ground"]).max()) <= 1e-4
        assert float(np.abs(a.numpy() - up["aerial"]).max()) <= 1e-4
        assert recipe.name == "l2ltr" and recipe.variant == "full" and recipe.backbone == "r50_hybrid"
        assert dict(recipe.head_kwargs)["depth"] == 3 and dict(recipe.head_kwargs)["self_cross"]
        manifest = read_manifest(out)
        assert manifest.source_kind == "l2ltr" and manifest.descriptor_dim == 64
        assert manifest.preprocessing.resize == "PIL.Image.BILINEAR"
        assert manifest.preprocessing.polar["preset"] == "safa_imsave@1"
        assert manifest.preprocessing.polar["decode"] == "pil"
        assert manifest.source_options["polar_script"] == "safa"

    def test_polar_script_option(self):
        """L2LTR's README names SAFA's and DSM's data_preparation.py: the preset records which made the PNGs."""
        dsm = l2ltr_preprocessing(polar_script="dsm")
        assert dsm.polar["preset"] == "dsm_imsave@1" and dsm.polar["size"] == [128, 512]
        assert l2ltr_preprocessing().polar["size"] == [112, 616]
        with pytest.raises(ValueError, match="polar_script must be one of"):
            l2ltr_preprocessing(polar_script="toker")

    def test_another_methods_checkpoint_is_refused(self, tmp_path):
        if not S4G.is_file():
            pytest.skip("no sample4geo fixture")
        with pytest.raises(
            ValueError, match=r"timm_model_test_convnext\.pth: no \['model_grd', 'model_sat'\]"
        ):
            convert("l2ltr", S4G, tmp_path / "out")

    def test_truncated_file_is_named(self, converted, tmp_path):
        data = converted[0].read_bytes()
        bad = tmp_path / "cut.pth"
        bad.write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptCheckpointError, match=r"cut\.pth"):
            convert("l2ltr", bad, tmp_path / "out")

    def test_missing_key_is_named(self, tmp_path):
        src = _checkpoint(tmp_path / "partial.pth", drop="transformer.encoder.layer.1.attention_norm_2.bias")
        with pytest.raises(
            StateDictMismatchError, match=r"partial\.pth.*missing \(.*blocks\.1\.key_norm\.bias"
        ):
            convert("l2ltr", src, tmp_path / "out", num_heads=4, image_size=(32, 128))
        assert not (tmp_path / "out").exists()
