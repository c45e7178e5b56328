"""The ``vit-r50-in21k`` converter and ``load_init`` (``geo-bench train --init``), against L2LTR's own
``load_from`` (position grid zoomed by ``scipy.ndimage.zoom``) on a reduced R50+ViT-B/16 ``.npz``.

Fixtures: ``tests/data/upstream/vit_r50`` (README there); ``make_fixtures.npz_values`` rebuilds the
Flax-layout file.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_retrieval.convert import StateDictMismatchError, convert, load_converted
from geo_retrieval.convert.vit_r50 import load_init, resize_pos_embed
from geo_retrieval.recipes import build, get_recipe

DATA = Path(__file__).parent / "data" / "upstream" / "vit_r50"
L2LTR = Path(__file__).parent / "data" / "upstream" / "l2ltr"


def _fixtures(folder: Path = DATA):
    spec = importlib.util.spec_from_file_location(f"mf_{folder.name}", folder / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vit")
    npz = tmp / "R50+ViT-B_16.npz"
    np.savez(npz, **_fixtures().npz_values())
    out = tmp / "init"
    convert("vit-r50-in21k", npz, out, num_heads=4, image_size=(32, 128))
    return npz, out


class TestVitR50Init:
    def test_init_reproduces_upstream_load_from(self, converted):
        _, out = converted
        manifest, recipe, _ = load_converted(out)
        assert manifest.source_kind == "vit-r50-in21k" and recipe.name == "l2ltr" and recipe.variant == "full"
        assert set(manifest.dropped) == {"head/kernel", "head/bias"}
        model = build(recipe)
        filled = load_init(model, out)
        assert filled == {"aerial_backbone": 48, "aerial_head": 60, "ground_backbone": 48, "ground_head": 60}
        model.eval()
        g, a = (torch.from_numpy(x) for x in _fixtures().fixture_inputs())
        with torch.no_grad():
            dg, da = model(g, a)
        up = np.load(DATA / "parity.npz")
        # measured: 1.5e-7 / 1.9e-7; the zoomed position embedding 0.0
        assert float(np.abs(dg.numpy() - up["ground"]).max()) <= 1e-4
        assert float(np.abs(da.numpy() - up["aerial"]).max()) <= 1e-4
        np.testing.assert_allclose(model.aerial_head.pos_embed.detach().numpy(), up["pos_embed"], atol=1e-6)

    def test_resize_is_identity_on_the_same_grid(self):
        pos = torch.randn(1, 197, 4)
        assert resize_pos_embed(pos, (14, 14)) is pos
        with pytest.raises(ValueError, match="square grid"):
            resize_pos_embed(torch.zeros(1, 11, 4), (2, 8))

    def test_init_refuses_a_wrong_folder(self, converted, tmp_path):
        _, out = converted
        # a trained l2ltr checkpoint is no initialisation
        mf = _fixtures(L2LTR)
        spec = json.loads((L2LTR / "state_spec.json").read_text())
        ckpt = {
            v: {k: torch.from_numpy(x) for k, x in mf.fixture_state(spec[v], v).items()} for v in mf.VIEWS
        }
        torch.save(ckpt, tmp_path / "model_checkpoint.pth")
        trained = tmp_path / "trained"
        convert("l2ltr", tmp_path / "model_checkpoint.pth", trained, num_heads=4, image_size=(32, 128))
        model = build(load_converted(out)[1])
        with pytest.raises(ValueError, match=r"a converted 'l2ltr' checkpoint, not an initialisation"):
            load_init(model, trained)
        # an initialisation for another model (the small recipe) names the folder and the keys
        with pytest.raises(StateDictMismatchError, match=r"init: .*does not fit this model"):
            load_init(build(get_recipe("l2ltr", "small")), out)
