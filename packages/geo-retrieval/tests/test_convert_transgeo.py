"""The ``transgeo`` checkpoint source (TransGeo, CVPR'22) and the ``deit_*`` logits backbone.

Parity fixtures: ``tests/data/upstream/transgeo`` (made by TransGeo's own code; see its README).
"""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from geo_retrieval.checkpoint import CorruptCheckpointError, file_sha256
from geo_retrieval.convert import (
    StateDictMismatchError,
    convert,
    list_sources,
    load_converted,
    main,
    map_state_dict,
    read_manifest,
)
from geo_retrieval.convert.transgeo import _rename, inspect_transgeo
from geo_retrieval.recipes import build, get_recipe
from geo_retrieval.token_crop import attention_keep_order, keep_order_channel

DATA = Path(__file__).parent / "data" / "upstream" / "transgeo"
CKPT = DATA / "checkpoint.pth.tar"
S4G_CKPT = Path(__file__).parent / "data" / "upstream" / "sample4geo" / "timm_model_test_convnext.pth"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("transgeo") / "out"
    convert("transgeo", CKPT, out, dataset="cvusa", num_heads=2)
    return out


class TestTransGeoParity:
    def test_reproduces_upstream_descriptors(self, converted):
        _, recipe, model = load_converted(converted)
        fx = np.load(DATA / "descriptors.npz")
        model.eval()
        with torch.no_grad():
            g = model.encode_ground(torch.from_numpy(fx["ground_input"]).float())
            a = model.encode_aerial(torch.from_numpy(fx["aerial_input"]).float())
        # upstream collects (head(cls) + head_dist(dist)) / 2 and L2-normalises it in accuracy()
        dg = (g - F.normalize(torch.from_numpy(fx["ground"]), dim=1)).abs().max().item()
        da = (a - F.normalize(torch.from_numpy(fx["aerial"]), dim=1)).abs().max().item()
        assert dg <= 1e-4 and da <= 1e-4, (dg, da)  # measured: 1.4e-7 and 9.1e-8
        assert g.shape == a.shape == (2, 48) and g.dtype == torch.float32
        assert (recipe.ground_size, recipe.aerial_size) == ((112, 616), (256, 256))

    def test_deit_logits_backbone_is_the_mean_of_the_token_heads(self):
        torch.manual_seed(0)
        recipe = get_recipe("transgeo", "full").replace(
            backbone_kwargs={"num_classes": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
            ground_size=(32, 128),
            aerial_size=(64, 64),
        )
        model = build(recipe).eval()
        assert not model.shared_backbone and model.ground_backbone.kind == "logits"
        deit = model.ground_backbone.model
        x = torch.rand(2, 3, 32, 128)
        with torch.no_grad():
            tokens = deit.forward_features(x)
            expected = F.normalize((deit.head(tokens[:, 0]) + deit.head_dist(tokens[:, 1])) / 2, dim=1)
            assert torch.allclose(model.encode_ground(x), expected, atol=1e-6)
            assert model.encode_aerial(torch.rand(2, 3, 64, 64)).shape == (2, 8)
        with pytest.raises(ValueError, match="no variant 'small'"):
            get_recipe("transgeo", "small")


class TestTransGeoManifest:
    def test_folder_and_manifest(self, converted):
        m = read_manifest(converted)
        assert m.source_kind == "transgeo" and m.source_file == CKPT.name
        assert m.source_sha256 == file_sha256(CKPT)
        assert (m.recipe, m.variant) == ("transgeo", "full")
        assert (
            m.overrides["backbone"] == "deit_small_distilled_patch16_224" and m.overrides["shared"] is False
        )
        assert m.overrides["backbone_kwargs"] == {
            "num_classes": 48,
            "depth": 2,
            "embed_dim": 64,
            "num_heads": 2,
            "mlp_ratio": 4.0,
        }
        assert m.overrides["aerial_size"] == [256, 256] and m.overrides["polar"] is False
        assert m.source_extra == {"epoch": 100, "best_acc1": 12.5}  # best_acc1: a numpy float64 upstream
        assert m.casts == {"float16 -> float32": 70} and m.dropped == {} and m.descriptor_dim == 48
        p = m.preprocessing
        assert (p.reader, p.resize) == ("pil", "PIL.Image.BILINEAR")
        assert (p.ground_size, p.aerial_size) == ((112, 616), (256, 256))
        assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
        assert p.ground_crop is None and p.polar is None

    def test_cli(self, tmp_path, capsys):
        rc = main(["transgeo", str(CKPT), str(tmp_path / "c"), "--dataset", "cvact", "--num-heads", "2"])
        assert rc == 0 and "manifest" in capsys.readouterr().out
        m = read_manifest(tmp_path / "c")
        assert m.source_options == {"dataset": "cvact", "num_heads": 2, "stage": 1}
        # upstream's CVACT loader crops the panorama to its middle rows (H // 4 .. H // 4 * 3)
        assert m.preprocessing.ground_crop == (0.25, 0.75) and m.preprocessing.aerial_tokens is None
        assert "transgeo" in list_sources()

    def test_real_architecture_stage2_keys(self):
        """DeiT-S keys (timm's equal upstream's) at 112x616 and a 320x320 stage-2 aerial: the sizes and
        the architecture are read from the state dict; heads default to width / 64 = 6."""
        with torch.device("meta"):
            g = timm.create_model("deit_small_distilled_patch16_224", img_size=(112, 616), num_classes=1000)
            a = timm.create_model("deit_small_distilled_patch16_224", img_size=(320, 320), num_classes=1000)
        state = {f"query_net.{k}": v for k, v in g.state_dict().items()}
        state.update({f"reference_net.{k}": v for k, v in a.state_dict().items()})
        arch = inspect_transgeo(state)
        assert arch["aerial_size"] == (320, 320)
        assert arch["backbone_kwargs"] == {
            "num_classes": 1000,
            "depth": 12,
            "embed_dim": 384,
            "num_heads": 6,
            "mlp_ratio": 4.0,
        }
        recipe = get_recipe("transgeo", "full").replace(**arch)
        with torch.device("meta"):
            ours = build(recipe)
        mapped = map_state_dict(state, ours.state_dict(), _rename, path="meta")
        assert ours.ground_backbone.out_channels == 1000
        assert len(mapped.state) == len(state) == len(ours.state_dict())


def _stage2_checkpoint(path: Path) -> Path:
    """Upstream's stage-2 fixture checkpoint (``make_stage2_fixtures.fixture_state`` on ``stage2_spec.json``,
    float16, as upstream's ``save_checkpoint`` writes it), rebuilt instead of committed."""
    spec = importlib.util.spec_from_file_location("transgeo_stage2", DATA / "make_stage2_fixtures.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    shapes = json.loads((DATA / "stage2_spec.json").read_text())
    state = {f"module.{k}": torch.from_numpy(v).half() for k, v in mf.fixture_state(shapes).items()}
    torch.save({"epoch": 50, "state_dict": state, "best_acc1": np.float64(40.0)}, path)
    return path


@pytest.fixture(scope="module")
def converted_stage2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transgeo2")
    out = tmp / "out"
    convert("transgeo", _stage2_checkpoint(tmp / "checkpoint.pth.tar"), out, dataset="cvusa", num_heads=2)
    return out


class TestTransGeoStage2:
    def test_recognised_and_recorded(self, converted_stage2, tmp_path):
        """A 320x320 aerial on CVUSA is stage 2 (--sat_res 320 --crop): select_tokens and aerial_tokens."""
        m = read_manifest(converted_stage2)
        assert m.source_options["stage"] == 2 and m.overrides["aerial_size"] == [320, 320]
        assert m.overrides["backbone_kwargs"]["select_tokens"] is True
        tokens = m.preprocessing.aerial_tokens
        assert (
            tokens["method"] == "transgeo_attention" and tokens["keep_rate"] == 0.64 and tokens["patch"] == 16
        )
        assert any("stage 2" in n for n in m.notes)
        # --stage 1 forces every patch
        convert(
            "transgeo",
            _stage2_checkpoint(tmp_path / "c.pth.tar"),
            tmp_path / "s1",
            dataset="cvusa",
            num_heads=2,
            stage=1,
        )
        m1 = read_manifest(tmp_path / "s1")
        assert (
            m1.preprocessing.aerial_tokens is None and "select_tokens" not in m1.overrides["backbone_kwargs"]
        )
        with pytest.raises(ValueError, match="stage must be 1 or 2"):
            convert("transgeo", tmp_path / "c.pth.tar", tmp_path / "s3", dataset="cvusa", stage=3)

    def test_reproduces_upstream_crop(self, converted_stage2):
        """Upstream's forward_features_crop on seeded 320x320 aerials with stage-1 attention maps (its scan's
        PNGs): the kept patch indices are equal and the descriptors within 1e-4 (measured 1.3e-7)."""
        _, _, model = load_converted(converted_stage2)
        model.eval()
        fx = np.load(DATA / "stage2_descriptors.npz")
        order = attention_keep_order(torch.from_numpy(fx["attention"]), (20, 20))
        np.testing.assert_array_equal(order.numpy(), fx["kept"])
        assert order.shape == (2, 256)  # int(0.64 * 400)
        image = torch.from_numpy(fx["aerial_input"]).float()
        x = torch.cat([image, keep_order_channel(order, (20, 20), 16)], dim=1)
        up = F.normalize(torch.from_numpy(fx["aerial"]), dim=1)
        with torch.no_grad():
            ours = model.encode_aerial(x)
            every_patch = model.encode_aerial(image)
        assert (ours - up).abs().max().item() <= 1e-4
        assert (every_patch - up).abs().max().item() > 1e-3  # the crop changes the descriptor


class TestTransGeoFaults:
    def test_truncated_file(self, tmp_path, capsys):
        bad = tmp_path / "truncated.pth.tar"
        bad.write_bytes(CKPT.read_bytes()[:1000])
        with pytest.raises(CorruptCheckpointError, match=r"truncated\.pth\.tar"):
            convert("transgeo", bad, tmp_path / "out", dataset="cvusa")
        rc = main(["transgeo", str(bad), str(tmp_path / "out"), "--dataset", "cvusa"])
        err = capsys.readouterr().err
        assert rc == 2 and str(bad) in err and err.count("\n") == 1 and not (tmp_path / "out").exists()

    def test_checkpoint_of_another_method(self, tmp_path):
        with pytest.raises(
            ValueError, match=r"timm_model_test_convnext\.pth.*no query_net\.pos_embed"
        ) as err:
            convert("transgeo", S4G_CKPT, tmp_path / "out", dataset="cvusa")
        assert "logit_scale" in str(err.value)  # the file's own first keys are named

    def test_other_dataset_names_position_embedding(self, tmp_path):
        with pytest.raises(StateDictMismatchError, match="266 patch tokens") as err:
            convert("transgeo", CKPT, tmp_path / "out", dataset="vigor", num_heads=2)
        assert str(CKPT) in str(err.value)
        assert err.value.mismatched[0].startswith("query_net.pos_embed: checkpoint (1, 268, 64)")

    def test_extra_and_missing_keys_are_named(self, tmp_path):
        obj = torch.load(CKPT, weights_only=False)
        state = obj["state_dict"]
        state["module.query_net.extra.weight"] = torch.ones(2)
        del state["module.reference_net.norm.bias"]
        torch.save({"state_dict": state}, tmp_path / "edited.pth.tar")
        with pytest.raises(StateDictMismatchError) as err:
            convert("transgeo", tmp_path / "edited.pth.tar", tmp_path / "out", dataset="cvusa", num_heads=2)
        assert "edited.pth.tar" in str(err.value)
        assert err.value.missing == ["aerial_backbone.model.norm.bias"]
        assert err.value.unexpected == ["query_net.extra.weight -> ground_backbone.model.extra.weight"]

    def test_refuses_foreign_out_dir_and_bad_heads(self, tmp_path):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match="busy"):
            convert("transgeo", CKPT, tmp_path / "busy", dataset="cvusa", num_heads=2)
        with pytest.raises(ValueError, match="--num-heads 3"):
            convert("transgeo", CKPT, tmp_path / "x", dataset="cvusa", num_heads=3)
        shutil.rmtree(tmp_path / "busy")
