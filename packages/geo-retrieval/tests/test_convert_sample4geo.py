"""The ``sample4geo`` checkpoint source, the strict mapping helper and converted-checkpoint folders.

Parity fixtures: ``tests/data/upstream/sample4geo`` (made by Sample4Geo's own code; see its README).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from geo_retrieval.checkpoint import CorruptCheckpointError, file_sha256, load_weights
from geo_retrieval.convert import (
    StateDictMismatchError,
    convert,
    list_sources,
    load_converted,
    main,
    map_state_dict,
    read_manifest,
)
from geo_retrieval.convert.sample4geo import DEFAULT_MODEL, GROUND_SIZES, _rename
from geo_retrieval.recipes import build, get_recipe

DATA = Path(__file__).parent / "data" / "upstream" / "sample4geo"
CKPT = DATA / "timm_model_test_convnext.pth"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("s4g") / "out"
    convert("sample4geo", CKPT, out, dataset="cvusa", model="test_convnext")
    return out


class TestSample4GeoParity:
    def test_reproduces_upstream_descriptors(self, converted):
        _, _, model = load_converted(converted)
        fx = np.load(DATA / "descriptors.npz")
        model.eval()
        with torch.no_grad():
            g = model.encode_ground(torch.from_numpy(fx["ground_input"]).float())
            a = model.encode_aerial(torch.from_numpy(fx["aerial_input"]).float())
        dg = (g - torch.from_numpy(fx["ground"])).abs().max().item()
        da = (a - torch.from_numpy(fx["aerial"])).abs().max().item()
        assert dg <= 1e-4 and da <= 1e-4, (dg, da)  # measured: 0.0 and 0.0
        assert g.dtype == torch.float32 and g.shape == (2, 64)

    def test_dataparallel_prefix_and_float32_file(self, tmp_path, converted):
        state = torch.load(CKPT, weights_only=True)
        torch.save({f"module.{k}": v.float() for k, v in state.items()}, tmp_path / "dp.pth")
        convert("sample4geo", tmp_path / "dp.pth", tmp_path / "out", dataset="cvusa", model="test_convnext")
        ours, ref = (
            load_weights(tmp_path / "out" / "model.safetensors"),
            load_weights(converted / "model.safetensors"),
        )
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours)
        assert read_manifest(tmp_path / "out").casts == {}


class TestSample4GeoManifest:
    def test_folder_and_manifest(self, converted):
        assert sorted(p.name for p in converted.iterdir()) == [
            "manifest.json",
            "model.safetensors",
            "recipe.json",
        ]
        m = read_manifest(converted)
        assert m.source_kind == "sample4geo" and m.source_file == CKPT.name
        assert m.source_sha256 == file_sha256(CKPT)
        assert m.weights_sha256 == file_sha256(converted / "model.safetensors")
        assert (m.recipe, m.variant) == ("sample4geo", "full")
        assert m.overrides["backbone"] == "test_convnext" and m.overrides["shared"] is True
        assert m.dropped == {"logit_scale": m.dropped["logit_scale"]}
        assert m.source_extra["logit_scale"] == pytest.approx(float(torch.load(CKPT)["logit_scale"]))
        assert m.casts == {"float16 -> float32": 99}
        p = m.preprocessing
        assert (p.reader, p.resize) == ("opencv", "cv2.INTER_LINEAR_EXACT")
        assert (p.ground_size, p.aerial_size) == ((140, 768), (384, 384))
        assert p.mean == (0.5, 0.5, 0.5) and p.std == (0.5, 0.5, 0.5)  # test_convnext's timm data config
        assert p.ground_crop is None and p.polar is None and m.descriptor_dim == 64
        recipe_json = json.loads((converted / "recipe.json").read_text())
        assert (recipe_json["name"], recipe_json["variant"], recipe_json["backbone"]) == (
            "sample4geo",
            "full",
            "test_convnext",
        )

    def test_tampered_weights_refused(self, tmp_path, converted):
        copy = tmp_path / "copy"
        shutil.copytree(converted, copy)
        (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:-1] + b" ")
        with pytest.raises(ValueError, match="sha256 differs"):
            load_converted(copy)

    def test_cli_vigor_sizes(self, tmp_path, capsys):
        rc = main(
            ["sample4geo", str(CKPT), str(tmp_path / "v"), "--dataset", "vigor", "--model", "test_convnext"]
        )
        assert rc == 0 and "manifest" in capsys.readouterr().out
        m = read_manifest(tmp_path / "v")
        assert m.preprocessing.ground_size == GROUND_SIZES["vigor"] == (384, 768)
        assert load_converted(tmp_path / "v")[1].ground_size == (384, 768)

    def test_real_architecture_keys(self):
        """Upstream's convnext_base TimmModel keys map onto the full recipe (shapes only, meta tensors)."""
        with torch.device("meta"):
            upstream = timm.create_model(DEFAULT_MODEL, pretrained=False, num_classes=0)
            ours = build(get_recipe("sample4geo", "full"))
        source = {f"model.{k}": v for k, v in upstream.state_dict().items()}
        source["logit_scale"] = torch.zeros((), device="meta")
        mapped = map_state_dict(
            source, ours.state_dict(), _rename, path="meta", dropped={"logit_scale": "loss"}
        )
        assert len(mapped.state) == len(ours.state_dict()) == len(source) - 1
        assert ours.ground_backbone.out_channels == 1024


class TestSample4GeoFaults:
    def test_truncated_file(self, tmp_path, capsys):
        bad = tmp_path / "truncated.pth"
        bad.write_bytes(CKPT.read_bytes()[:1000])
        with pytest.raises(CorruptCheckpointError, match=r"truncated\.pth"):
            convert("sample4geo", bad, tmp_path / "out", dataset="cvusa", model="test_convnext")
        rc = main(
            ["sample4geo", str(bad), str(tmp_path / "out"), "--dataset", "cvusa", "--model", "test_convnext"]
        )
        err = capsys.readouterr().err
        assert rc == 2 and str(bad) in err and err.count("\n") == 1 and not (tmp_path / "out").exists()

    def test_checkpoint_of_another_method(self, tmp_path):
        torch.manual_seed(0)
        other = timm.create_model("resnet10t", pretrained=False, num_classes=0)
        torch.save(other.state_dict(), tmp_path / "resnet.pth")
        with pytest.raises(StateDictMismatchError) as err:
            convert(
                "sample4geo",
                tmp_path / "resnet.pth",
                tmp_path / "out",
                dataset="cvusa",
                model="test_convnext",
            )
        msg = str(err.value)
        assert (
            "resnet.pth" in msg and "99 missing" in msg and "unexpected (bn1.bias" in msg and "in all" in msg
        )
        assert len(err.value.missing) == 99 and err.value.unexpected[0] == "bn1.bias"

    def test_toker_checkpoint(self, tmp_path):
        torch.save(
            {"generator_model_dict": {"module.w": torch.ones(1)}, "last_epoch": 3}, tmp_path / "toker.pth"
        )
        with pytest.raises(ValueError, match=r"toker\.pth.*Sample4Geo"):
            convert(
                "sample4geo", tmp_path / "toker.pth", tmp_path / "out", dataset="cvusa", model="test_convnext"
            )

    def test_wrong_model_names_shapes(self, tmp_path):
        with pytest.raises(StateDictMismatchError, match=r"mismatched \(model\.") as err:
            convert("sample4geo", CKPT, tmp_path / "out", dataset="cvusa", model="test_convnext2")
        assert err.value.mismatched and "checkpoint (" in err.value.mismatched[0]

    def test_refuses_foreign_out_dir_and_unknown_options(self, tmp_path):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match="busy"):
            convert("sample4geo", CKPT, tmp_path / "busy", dataset="cvusa", model="test_convnext")
        assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
        with pytest.raises(ValueError, match="--dataset"):
            convert("sample4geo", CKPT, tmp_path / "x", dataset="kitti", model="test_convnext")


class TestMapStateDict:
    def test_lists_first_few_and_counts(self):
        target = {f"net.w{i}": torch.zeros(2) for i in range(8)}
        source = {f"model.w{i}": torch.ones(3 if i < 7 else 2) for i in range(8)}
        source.update({f"extra{i}": torch.ones(1) for i in range(6)})
        with pytest.raises(StateDictMismatchError) as err:
            map_state_dict(
                source,
                target,
                lambda k: "net." + k[6:] if k.startswith("model.") else None,
                path="f.pth",
                what="nope",
            )
        msg = str(err.value)
        assert msg.startswith("f.pth: nope: ")
        assert "6 unexpected (extra0, extra1, extra2, extra3, extra4, ... (6 in all))" in msg
        assert "7 mismatched (model.w0: checkpoint (3,) vs model (2,)" in msg and "missing" not in msg

    def test_missing_nonfinite_and_duplicates(self):
        target = {"a": torch.zeros(1), "b": torch.zeros(1), "c": torch.zeros(1)}
        with pytest.raises(StateDictMismatchError) as err:
            map_state_dict(
                {"x.a": torch.tensor([float("nan")]), "b": torch.zeros(1), "z.b": torch.zeros(1)},
                target,
                lambda k: k.rpartition(".")[2],
                path="p",
            )
        assert err.value.missing == ["c"]
        assert any("NaN" in m for m in err.value.mismatched) and any(
            "both map" in m for m in err.value.mismatched
        )

    def test_registry(self):
        assert {"sample4geo", "toker"} <= set(list_sources())
        with pytest.raises(ValueError, match="available"):
            convert("nope", CKPT, "x")
