"""Make the Toker et al. CVACT evaluation parity fixtures with the upstream code itself.

This is our script; it contains no upstream code. It runs aysim/comingdowntoearth from ``--upstream DIR``
(a checkout) in a scratch virtual environment outside the repository (torch, torchvision, numpy, scipy,
opencv-python-headless, Pillow, matplotlib and imageio 2.9.0; README.md beside this file):

1. ``data/convert_polar.py`` run as a script in a scratch folder laid out as it expects: its CVUSA
   block on an empty ``placeholder_bingmap/``; its CVACT blocks on the raw 1200x1200 aerials
   (``placeholder_satview_polish/``: ``imageio.imread``, SAFA's sampler at 112x616 with S = 1200,
   ``imageio.imsave`` of the float64 map under the aerial's ``.jpg`` name) and on the raw 832-row
   panoramas (``placeholder_streetview/``: rows 208:624, ``cv2.resize((616, 112), INTER_AREA)``,
   ``imageio.imsave``), for the val pairs of ``--cvact`` (``ANU_data_small``);
2. ``data.cvact_utils.CVACT(use_polar=True, isTrain=False)`` (on a copy of the folder's ``ACT_data.mat``
   with int64 index vectors: upstream indexes a list with them, which float64 ones refuse) + ``data.custom_transforms.ToTensor`` (what
   ``cvact_test.py`` builds) on a root holding those ``polarmap/`` and ``streetview_polish/`` files and
   the folder's ``ACT_data.mat``: the model inputs (3, 112, 616) of every CVACT_val pair;
3. the three upstream models at full size (``UnetGeneratorSkip()``, ``SAFA(sa_num=8)`` at 112x616) with
   geo-retrieval's deterministic fixture weights (``geo-retrieval/tests/data/upstream/toker/
   make_fixtures.py``: ``fixture_state``), rounded to float16 as the tests' checkpoint stores them,
   in eval mode: ``fake, resb6 = G(satellite)``, ``aerial, ground = SAFA(street, resb6)``
   (``rgan_wrapper_cvact.eval_model``).

Written to ``--out``: ``pixels.npz`` (per pair ``i``: ``id_i``; ``aerial_sha256_i`` / ``ground_sha256_i``
the sha256 of upstream's model input as a C-contiguous (3, 112, 616) float32 array; ``aerial_sum_i`` /
``ground_sum_i`` per-channel float64 sums; ``aerial_crop_i`` / ``ground_crop_i`` the uint8 levels of rows
48:56, columns 300:332; ``polarmap_sha256_i`` / ``streetview_polish_sha256_i`` the sha256 of the JPEG
files the script wrote) and ``e2e_descriptors.npz`` (``ground``, ``aerial`` (N, 2048) float32, ``ids``).

Usage::

    python make_fixtures.py --upstream /tmp/toker_cvact/upstream --cvact CVACT_DIR
        --toker-fixtures <repo>/packages/geo-retrieval/tests/data/upstream/toker --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CROP = (slice(48, 56), slice(300, 332))


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def _levels(x: np.ndarray) -> np.ndarray:
    """Upstream's normalised input back to its uint8 levels ((x + 1) / 2 * 255, exact)."""
    v = (x.astype(np.float64) + 1.0) / 2.0 * 255.0
    u8 = np.round(v)
    assert np.abs(v - u8).max() < 1e-3, "upstream pixels are not uint8 levels"
    return u8.astype(np.uint8)


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _int_index_copy(mat: Path, work: Path) -> Path:
    """A copy of ``ACT_data.mat`` with the index vectors as int64: upstream indexes a Python list with
    them (``self.all_list[self.data_inds[k][0]]``), which a float64 vector (what ``geo-bench synth``
    writes, MATLAB's default type) refuses; the values are unchanged."""
    import scipy.io

    m = {k: v for k, v in scipy.io.loadmat(mat).items() if not k.startswith("__")}
    for struct, fld in (("trainSet", "trainInd"), ("valSet", "valInd"), ("valSetAll", "valInd")):
        if struct in m:
            values = np.asarray(m[struct][fld][0][0])
            assert np.array_equal(values, np.round(values)), f"{struct}.{fld} holds non-integers"
            m[struct] = {fld: values.astype(np.int64)}
    m["panoIds"] = np.asarray(m["panoIds"])
    path = work / "ACT_data_int.mat"
    scipy.io.savemat(path, m)
    return path


def make(upstream: Path, cvact: Path, toker_fixtures: Path, out: Path) -> None:
    import torch
    import torchvision.models

    spec_mf = importlib.util.spec_from_file_location("toker_mf", toker_fixtures / "make_fixtures.py")
    assert spec_mf is not None and spec_mf.loader is not None
    mf = importlib.util.module_from_spec(spec_mf)
    spec_mf.loader.exec_module(mf)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "placeholder_bingmap").mkdir()
        sat, street = work / "placeholder_satview_polish", work / "placeholder_streetview"
        sat.mkdir()
        street.mkdir()
        for f in sorted((cvact / "ANU_data_small" / "satview_polish").glob("*.jpg")):
            shutil.copy(f, sat / f.name)
        for f in sorted((cvact / "ANU_data_small" / "streetview").glob("*.jpg")):
            shutil.copy(f, street / f.name)
        subprocess.run([sys.executable, str(upstream / "data" / "convert_polar.py")], cwd=work, check=True)
        root = work / "root"
        shutil.copytree(work / "placeholder_polarmap", root / "polarmap")
        shutil.copytree(work / "placeholder_streetview_polish", root / "streetview_polish")

        sys.path.insert(0, str(upstream))
        from data.custom_transforms import ToTensor
        from data.cvact_utils import CVACT

        ds = CVACT(
            root=str(root) + "/",
            all_data_list=str(_int_index_copy(cvact / "ACT_data.mat", work)),
            use_polar=True,
            isTrain=False,
            transform_op=ToTensor(),
        )
        arrays: dict[str, np.ndarray] = {}
        aerials, streets, ids = [], [], []
        for i in range(len(ds)):
            data, _utm = ds[i]
            pano_id = Path(ds.dataList[i][1]).name[: -len("_grdView.jpg")]
            arrays[f"id_{i}"] = np.asarray(pano_id)
            for view, key in (("aerial", "satellite"), ("ground", "street")):
                x = data[key].numpy()
                arrays[f"{view}_sha256_{i}"] = np.asarray(_sha(x))
                arrays[f"{view}_sum_{i}"] = x.astype(np.float64).sum(axis=(1, 2))
                arrays[f"{view}_crop_{i}"] = _levels(x)[:, CROP[0], CROP[1]]
            arrays[f"polarmap_sha256_{i}"] = np.asarray(_file_sha(Path(ds.dataList[i][4])))
            arrays[f"streetview_polish_sha256_{i}"] = np.asarray(_file_sha(Path(ds.dataList[i][1])))
            aerials.append(data["satellite"])
            streets.append(data["street"])
            ids.append(pano_id)
        np.savez_compressed(out / "pixels.npz", **arrays)

        # 3. the upstream models at full size with the fixture weights (float16-rounded)
        original = torchvision.models.resnet34
        torchvision.models.resnet34 = lambda pretrained=False, **kw: original(weights=None)  # no download
        from networks.c_gan import UnetGeneratorSkip
        from networks.safa import SAFA

        g, r = UnetGeneratorSkip(), SAFA(sa_num=8, H1=112, W1=616, H2=112, W2=616)
        for name, m in (("generator_model_dict", g), ("retriebal_model_dict", r)):
            spec = {k: list(v.shape) for k, v in m.state_dict().items()}
            state = {
                k: torch.from_numpy(v).half().float() if v.dtype == np.float32 else torch.from_numpy(v)
                for k, v in mf.fixture_state(spec).items()
            }
            m.load_state_dict(state, strict=True)
            m.eval()
            (out / f"spec_{name}.json").write_text(json.dumps(spec) + "\n")
        with torch.no_grad():
            _fake, resb6 = g(torch.stack(aerials))
            f_aerial, f_street = r(torch.stack(streets), resb6)
        np.savez(
            out / "e2e_descriptors.npz",
            ground=f_street.numpy().astype(np.float32),
            aerial=f_aerial.numpy().astype(np.float32),
            ids=np.asarray(ids),
        )
        print("pairs:", ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="a comingdowntoearth checkout")
    parser.add_argument(
        "--cvact", type=Path, required=True, help="the CVACT-layout folder (real-size images)"
    )
    parser.add_argument(
        "--toker-fixtures", type=Path, required=True, help="geo-retrieval's tests/data/upstream/toker folder"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    make(args.upstream.resolve(), args.cvact.resolve(), args.toker_fixtures.resolve(), args.out.resolve())


if __name__ == "__main__":
    main()
