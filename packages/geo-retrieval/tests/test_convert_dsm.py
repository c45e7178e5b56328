"""The ``dsm`` converter (DSM's TF1 checkpoint onto the dsm recipe, full) against the outputs of DSM's own
TF model code, and the TF-SAME padding option of the DSM head it needs.

Fixtures: ``tests/data/upstream/dsm`` (README there): ``upstream.index`` (the index of a checkpoint
saved by upstream's graph: its 52 variable names and shapes), ``parity.npz`` (upstream's feature maps,
distances and orientations) and ``make_fixtures.py``, whose ``fixture_weights`` / ``fixture_inputs``
rebuild the deterministic weights and inputs.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_retrieval.convert import StateDictMismatchError, convert, load_converted
from geo_retrieval.convert.tf_checkpoint import TFCheckpointError, tf_checkpoint_entries, write_tf_checkpoint
from geo_retrieval.heads import DSMHead, dsm_similarity

DATA = Path(__file__).parent / "data" / "upstream" / "dsm"
SAFA_SUBSET = Path(__file__).parent / "data" / "upstream" / "safa" / "subset.ckpt.index"


def _fixtures():
    spec = importlib.util.spec_from_file_location("dsm_make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nchw_rgb(x: np.ndarray) -> torch.Tensor:
    """Upstream's NHWC BGR input -> our NCHW RGB."""
    return torch.from_numpy(np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2)))


class TestDSMHeadTFSame:
    def test_stride2_pads_after_only(self):
        torch.manual_seed(0)
        head = DSMHead(in_channels=4, channels=(4, 4, 2), padding="tf_same")
        ref = DSMHead(in_channels=4, channels=(4, 4, 2))
        ref.load_state_dict(head.state_dict())
        x = torch.randn(2, 4, 16, 8)
        y = head(x)
        assert y.shape == ref(x).shape == (2, 2, 4, 8)
        # TF SAME for a stride-2 3x3 conv on 16 rows: pad (0, 1) rows, (1, 1) columns
        conv = ref.convs[0]
        manual = torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (1, 1, 0, 1)), conv.weight, conv.bias, stride=(2, 1)
        )
        np.testing.assert_allclose(head.convs[0](x).detach(), manual.detach(), atol=1e-6)
        assert not torch.allclose(y, ref(x))

    def test_circular_head_ignores_it_and_bad_value_raises(self):
        head = DSMHead(in_channels=4, channels=(4, 4, 2), circular=True, padding="tf_same")
        assert head(torch.randn(1, 4, 8, 8)).shape == (1, 2, 2, 8)
        with pytest.raises(ValueError, match="padding must be"):
            DSMHead(in_channels=4, padding="same")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dsm")
    entries, _ = tf_checkpoint_entries(DATA / "upstream.index")
    weights = _fixtures().fixture_weights({k: e.shape for k, e in entries.items()})
    weights["grd/conv_dim_reduct_1/weights/Adam_1"] = np.zeros((3, 3, 512, 256), np.float32)
    weights["beta2_power"] = np.array(0.999, np.float32)
    src = write_tf_checkpoint(tmp / "model.ckpt", weights)
    out = tmp / "converted"
    convert("dsm", src, out)
    return src, out


class TestConvertDSM:
    def test_reproduces_upstream_maps_distances_orientations(self, converted):
        _, out = converted
        manifest, recipe, model = load_converted(out, verify=False)
        model.eval()
        sat, grd = _fixtures().fixture_inputs()
        ref = np.load(DATA / "parity.npz")
        with torch.no_grad():
            g = model.encode_ground(_nchw_rgb(grd))
            a = model.encode_aerial(_nchw_rgb(sat))
        assert g.shape == a.shape == (2, 16, 4, 64)
        up_g = ref["grd_vgg"].transpose(0, 3, 1, 2)
        up_a = ref["sat_vgg"].transpose(0, 3, 1, 2)
        up_a = up_a / np.linalg.norm(up_a.reshape(2, -1), axis=1)[:, None, None, None]
        assert np.abs(g.numpy() - up_g).max() <= 1e-4
        assert np.abs(a.numpy() - up_a).max() <= 1e-4
        sim, shift = dsm_similarity(g, a)
        assert np.abs((2 - 2 * sim).numpy() - ref["distance"]).max() <= 1e-4
        np.testing.assert_array_equal(shift.numpy().T, ref["orien"])
        assert manifest.overrides["head_kwargs"]["padding"] == "tf_same"
        assert manifest.overrides["backbone_kwargs"]["ceil_mode"] is True
        assert recipe.head_kwargs["padding"] == "tf_same"
        assert set(manifest.dropped) == {"grd/conv_dim_reduct_1/weights/Adam_1", "beta2_power"}
        pre = manifest.preprocessing
        assert pre.polar["preset"] == "dsm_imsave@1" and pre.polar["decode"] == "pil"
        assert (pre.reader, pre.resize, pre.ground_size, pre.mean, pre.max_pixel_value) == (
            "opencv_caffe",
            "cv2.INTER_AREA",
            (128, 512),
            (123.6, 116.779, 103.939),
            1.0,
        )
        assert manifest.descriptor_dim == 16 * 4 * 64

    def test_safa_checkpoint_names_file_and_keys(self, tmp_path):
        with pytest.raises(
            StateDictMismatchError, match=r"subset\.ckpt\.index: not a .*cross_view_localization_DSM"
        ) as err:
            convert("dsm", SAFA_SUBSET, tmp_path / "out")
        assert "spatial_grd/weights1" in err.value.unexpected
        assert "ground_head.convs.0.weight" in err.value.missing
        assert not (tmp_path / "out").exists()

    def test_truncated_index_names_file(self, tmp_path):
        entries, _ = tf_checkpoint_entries(DATA / "upstream.index")
        (tmp_path / "model.ckpt.index").write_bytes((DATA / "upstream.index").read_bytes()[:-60])
        with pytest.raises(TFCheckpointError, match=r"model\.ckpt\.index"):
            convert("dsm", tmp_path / "model.ckpt.index", tmp_path / "out")
        assert len(entries) == 52
