"""The ``geodtr`` checkpoint source (GeoDTR, AAAI'23), the ``geodtr`` head and ``resnet34_nomaxpool``.

Parity fixtures: ``tests/data/upstream/geodtr`` (made by GeoDTR's own code; see its README). Two
ResNet-34s do not fit a small fixture: the checkpoint is rebuilt here from upstream's keys
(``keys.json``) and the deterministic weights of ``make_fixtures.pattern_state``.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_retrieval.checkpoint import CorruptCheckpointError
from geo_retrieval.convert import (
    StateDictMismatchError,
    convert,
    list_sources,
    load_converted,
    main,
    read_manifest,
)
from geo_retrieval.heads import GeoDTRHead
from geo_retrieval.recipes import build, get_recipe

DATA = Path(__file__).parent / "data" / "upstream" / "geodtr"
PARAMS = DATA / "1700000000_parameter.json"


def _make_fixtures():
    spec = importlib.util.spec_from_file_location("geodtr_make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Upstream's layout: RUN/<ts>_parameter.json and RUN/epoch_7/epoch_7.pth."""
    root = tmp_path_factory.mktemp("geodtr") / "run"
    (root / "epoch_7").mkdir(parents=True)
    shutil.copy(PARAMS, root)
    state = _make_fixtures().pattern_state(json.loads((DATA / "keys.json").read_text()))
    ckpt = root / "epoch_7" / "epoch_7.pth"
    torch.save(
        {"epoch": 7, "model_state_dict": state, "optimizer_state_dict": {}, "scheduler_state_dict": {}}, ckpt
    )
    return ckpt


@pytest.fixture(scope="module")
def converted(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("geodtr_out") / "out"
    convert("geodtr", run, out)  # parameter.json found one folder up
    return out


class TestGeoDTRParity:
    def test_reproduces_upstream_descriptors(self, converted):
        _, recipe, model = load_converted(converted)
        fx = np.load(DATA / "descriptors.npz")
        model.eval()
        with torch.no_grad():
            g = model.encode_ground(torch.from_numpy(fx["ground_input"]).float())
            a = model.encode_aerial(torch.from_numpy(fx["aerial_input"]).float())
        dg = (g - torch.from_numpy(fx["ground"])).abs().max().item()
        da = (a - torch.from_numpy(fx["aerial"])).abs().max().item()
        assert dg <= 1e-4 and da <= 1e-4, (dg, da)  # measured: 0.0 and 0.0
        assert g.shape == a.shape == (1, 1024)  # 512 channels x n_des 2, channel-major
        assert recipe.ground_size == recipe.aerial_size == (122, 671) and recipe.polar


class TestGeoDTRManifest:
    def test_manifest(self, converted):
        m = read_manifest(converted)
        assert (m.source_kind, m.recipe, m.variant) == ("geodtr", "geodtr", "full")
        assert m.overrides["head"] == "geodtr" and m.overrides["backbone"] == "resnet34_nomaxpool"
        assert m.overrides["head_kwargs"] == {
            "num_descriptors": 2,
            "tr_heads": 4,
            "tr_layers": 2,
            "d_hid": 64,
            "dropout": 0.3,
        }
        assert m.source_extra == {
            "parameters_file": PARAMS.name,
            "dataset": "CVUSA",
            "cf": True,
            "epoch": 7,
        }
        p = m.preprocessing
        assert (p.reader, p.resize, p.mean, p.std) == ("pil", "PIL.Image.BILINEAR", (0.5,) * 3, (0.5,) * 3)
        assert p.ground_size == p.aerial_size == (122, 671) and p.polar["preset"] == "geodtr@1"
        assert m.descriptor_dim == 1024 and "geodtr" in list_sources()

    def test_non_polar_architecture(self):
        """pt=False: raw 256x256 aerials, a 16x16 map, upstream's in_dim_sat 256 (hidden 128)."""
        recipe = get_recipe("geodtr").replace(aerial_size=(256, 256), polar=False, polar_preset=None)
        with torch.device("meta"):
            model = build(recipe)
        assert model.aerial_head.feature_size == (16, 16) and model.ground_head.feature_size == (8, 42)
        assert tuple(model.aerial_head.w1.shape) == (256, 8, 128)
        assert tuple(model.ground_head.w1.shape) == (336, 8, 168)

    def test_head_without_transformer(self):
        head = GeoDTRHead(in_channels=4, feature_size=(2, 3), num_descriptors=2, tr_layers=0)
        assert head.encoder is None and head(torch.rand(3, 4, 2, 3)).shape == (3, 8)
        with pytest.raises(ValueError, match="even number"):
            GeoDTRHead(in_channels=4, feature_size=(3, 3))


class TestGeoDTRFaults:
    def test_missing_parameters(self, run, tmp_path, capsys):
        lone = tmp_path / "a" / "b" / "epoch_7.pth"
        lone.parent.mkdir(parents=True)
        shutil.copy(run, lone)
        with pytest.raises(FileNotFoundError, match=r"parameter\.json.*--parameters"):
            convert("geodtr", lone, tmp_path / "out")
        rc = main(["geodtr", str(lone), str(tmp_path / "out"), "--parameters", str(tmp_path / "nope.json")])
        assert rc == 2 and "nope.json" in capsys.readouterr().err

    def test_truncated_file(self, run, tmp_path):
        bad = tmp_path / "truncated.pth"
        bad.write_bytes(run.read_bytes()[:1000])
        with pytest.raises(CorruptCheckpointError, match=r"truncated\.pth"):
            convert("geodtr", bad, tmp_path / "out", parameters=PARAMS)

    def test_checkpoint_of_another_method(self, tmp_path):
        s4g = Path(__file__).parent / "data" / "upstream" / "sample4geo" / "timm_model_test_convnext.pth"
        with pytest.raises(
            ValueError, match=r"timm_model_test_convnext\.pth: not a zxh009123/GeoDTR checkpoint"
        ):
            convert("geodtr", s4g, tmp_path / "out", parameters=PARAMS)
        bare = tmp_path / "bare.pth"
        torch.save({"model_state_dict": {"module.query_net.pos_embed": torch.zeros(1, 4, 8)}}, bare)
        with pytest.raises(StateDictMismatchError) as err:
            convert("geodtr", bare, tmp_path / "out", parameters=PARAMS)
        assert "bare.pth" in str(err.value) and err.value.unexpected == ["query_net.pos_embed"]
        assert len(err.value.missing) == 496

    def test_parameters_file_is_checked_first(self, run, tmp_path):
        params = json.loads(PARAMS.read_text())
        del params["TR_layers"]
        (tmp_path / "q.json").write_text(json.dumps(params))
        with pytest.raises(ValueError, match=r"q\.json: no TR_layers"):
            convert("geodtr", run, tmp_path / "out", parameters=tmp_path / "q.json")
        (tmp_path / "r.json").write_text("{not json")
        with pytest.raises(ValueError, match=r"r\.json is not valid JSON"):
            convert("geodtr", run, tmp_path / "out", parameters=tmp_path / "r.json")
