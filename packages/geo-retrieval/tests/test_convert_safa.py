"""The pure-Python TF checkpoint reader and the ``safa`` converter (SAFA's TF1 checkpoint onto the safa
recipe, full), against descriptors of SAFA's own TF model code.

Fixtures: ``tests/data/upstream/safa`` (README there): ``upstream.index`` (the index of a checkpoint
saved by upstream's graph: its 60 variable names, dtypes, shapes), ``subset.ckpt.*`` (a real TF
checkpoint of six of those variables), ``parity.npz`` (upstream's descriptors) and ``make_fixtures.py``,
whose ``fixture_weights`` / ``fixture_inputs`` rebuild the deterministic weights and inputs.
"""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_retrieval.convert import StateDictMismatchError, convert, load_converted
from geo_retrieval.convert.tf_checkpoint import (
    TFCheckpointError,
    read_tf_checkpoint,
    tf_checkpoint_entries,
    tf_checkpoint_prefix,
    write_tf_checkpoint,
)

DATA = Path(__file__).parent / "data" / "upstream" / "safa"


def _fixtures():
    spec = importlib.util.spec_from_file_location("safa_make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nchw_rgb(x: np.ndarray) -> torch.Tensor:
    """Upstream's NHWC BGR input -> our NCHW RGB."""
    return torch.from_numpy(np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2)))


class TestTFCheckpoint:
    def test_reads_a_real_tf_checkpoint(self):
        arrays = read_tf_checkpoint(DATA / "subset.ckpt.index")
        expected = _fixtures().fixture_weights({k: v.shape for k, v in arrays.items()})
        assert sorted(arrays) == sorted(expected)
        assert len(arrays) == 6
        for name, value in arrays.items():
            assert value.dtype == np.float32
            np.testing.assert_array_equal(value, expected[name])

    def test_index_lists_upstream_variables(self):
        entries, shards = tf_checkpoint_entries(DATA / "upstream.index")
        assert shards == 1 and len(entries) == 60
        assert entries["VGG_grd/conv1_1/weights"].shape == (3, 3, 3, 64)
        assert entries["spatial_sat/weights1"].shape == (80, 40, 8)
        assert entries["spatial_sat/biases2"].shape == (1, 80, 8)

    def test_prefix(self):
        assert tf_checkpoint_prefix("a/model.ckpt.index") == Path("a/model.ckpt")
        assert tf_checkpoint_prefix("a/model.ckpt.data-00000-of-00001") == Path("a/model.ckpt")
        assert tf_checkpoint_prefix("a/model.ckpt") == Path("a/model.ckpt")

    def test_writer_round_trip(self, tmp_path):
        tensors = {
            "a/w": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
            "a/b": np.array([1.5, -2.0]),
            "step": np.array(7, dtype=np.int64),
            "i": np.arange(5, dtype=np.int32),
        }
        index = write_tf_checkpoint(tmp_path / "x.ckpt", tensors)
        back = read_tf_checkpoint(index)
        assert sorted(back) == sorted(tensors)
        for k, v in tensors.items():
            assert back[k].dtype == v.dtype and back[k].shape == v.shape
            np.testing.assert_array_equal(back[k], v)

    def test_truncated_data_names_file_and_key(self, tmp_path):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(DATA / f"subset.ckpt{suffix}", tmp_path / f"subset.ckpt{suffix}")
        data = tmp_path / "subset.ckpt.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[:1000])
        with pytest.raises(
            TFCheckpointError,
            match=r"subset\.ckpt\.data-00000-of-00001: truncated .*'VGG_grd/conv1_1/weights'",
        ):
            read_tf_checkpoint(tmp_path / "subset.ckpt.index")

    def test_damaged_index(self, tmp_path):
        raw = (DATA / "subset.ckpt.index").read_bytes()
        bad = tmp_path / "bad.ckpt.index"
        bad.write_bytes(raw[:30])
        with pytest.raises(TFCheckpointError, match=r"bad\.ckpt\.index: truncated"):
            read_tf_checkpoint(bad)
        bad.write_bytes(raw[:-1] + b"\x00")
        with pytest.raises(TFCheckpointError, match="bad table magic"):
            read_tf_checkpoint(bad)
        flipped = bytearray(raw)
        flipped[3] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        with pytest.raises(TFCheckpointError, match="CRC mismatch"):
            read_tf_checkpoint(bad)
        with pytest.raises(FileNotFoundError, match="no TF checkpoint index"):
            read_tf_checkpoint(tmp_path / "missing.ckpt")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safa")
    entries, _ = tf_checkpoint_entries(DATA / "upstream.index")
    weights = _fixtures().fixture_weights({k: e.shape for k, e in entries.items()})
    # a TF1 training checkpoint also holds Adam's slots and beta powers: dropped by name
    weights["VGG_grd/conv1_1/biases/Adam"] = np.zeros(64, np.float32)
    weights["beta1_power"] = np.array(0.9, np.float32)
    src = write_tf_checkpoint(tmp / "model.ckpt", weights)
    out = tmp / "converted"
    convert("safa", src, out)
    return src, out


class TestConvertSAFA:
    def test_reproduces_upstream_descriptors(self, converted):
        _, out = converted
        manifest, recipe, model = load_converted(out, verify=False)
        model.eval()
        sat, grd = _fixtures().fixture_inputs()
        ref = np.load(DATA / "parity.npz")
        with torch.no_grad():
            # one image per view (ground row 0, aerial row 1) keeps the test short
            g = model.encode_ground(_nchw_rgb(grd[:1])).numpy()
            a = model.encode_aerial(_nchw_rgb(sat[1:])).numpy()
        assert g.shape == a.shape == (1, 4096)
        assert np.abs(g - ref["grd_global"][:1]).max() <= 1e-4
        assert np.abs(a - ref["sat_global"][1:]).max() <= 1e-4
        assert manifest.descriptor_dim == 4096
        assert recipe.head_kwargs["pool"] == "mean"
        assert manifest.overrides["head_kwargs"]["pool"] == "mean"
        assert set(manifest.dropped) == {"VGG_grd/conv1_1/biases/Adam", "beta1_power"}
        pre = manifest.preprocessing
        assert (pre.reader, pre.mean, pre.std, pre.max_pixel_value) == (
            "opencv_caffe",
            (123.6, 116.779, 103.939),
            (1.0, 1.0, 1.0),
            1.0,
        )
        assert pre.polar["preset"] == "safa_imsave@1" and pre.polar["decode"] == "pil"
        assert manifest.source_file == "model.ckpt.index"

    def test_another_methods_checkpoint_names_file_and_keys(self, tmp_path):
        dsm_like = {
            "VGG_grd/grd/conv_dim_reduct_1/weights": np.zeros((3, 3, 4, 2), np.float32),
            "VGG_sat/sat/conv5_dim_reduct_3/biases": np.zeros(2, np.float32),
        }
        src = write_tf_checkpoint(tmp_path / "dsm.ckpt", dsm_like)
        with pytest.raises(
            StateDictMismatchError, match=r"dsm\.ckpt\.index: not a .*cross_view_localization_SAFA"
        ) as err:
            convert("safa", src, tmp_path / "out")
        assert "VGG_grd/grd/conv_dim_reduct_1/weights" in err.value.unexpected
        assert "ground_head.w1" in err.value.missing
        assert not (tmp_path / "out").exists()

    def test_truncated_checkpoint_names_file(self, tmp_path):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(DATA / f"subset.ckpt{suffix}", tmp_path / f"model.ckpt{suffix}")
        data = tmp_path / "model.ckpt.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[:-10])
        with pytest.raises(TFCheckpointError, match=r"model\.ckpt\.data-00000-of-00001: truncated"):
            convert("safa", tmp_path / "model.ckpt.index", tmp_path / "out")

    def test_options_checked(self, tmp_path):
        with pytest.raises(ValueError, match="channel_pool"):
            convert("safa", DATA / "subset.ckpt.index", tmp_path / "out", channel_pool="sum")
