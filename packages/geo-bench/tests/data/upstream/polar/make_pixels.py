"""Make the polar-PNG pixel fixtures by running the upstream scripts themselves (see README.md).

No upstream code is copied here: each stage lays out a scratch folder the way the upstream script expects
(its hard-coded relative paths), copies the upstream file there from a checkout given with ``--upstream``,
runs it unchanged, and saves what its reader returns. Stages run in different scratch interpreters:

    shi     --method safa|dsm   (Python 3.7, scipy 1.1.0: ``scipy.misc.imread`` / ``imsave``, OpenCV)
    l2ltr                       (Python 3.11 with torch / torchvision; reads the SAFA stage's polar PNGs)
    geodtr                      (Python 3.11 with torch / torchvision, imageio)
    tf      --method safa|dsm   (Python 3.11 with tensorflow-cpu; upstream's TF1 graph on upstream's pixels)
    pack                        (any Python with numpy: hashes, crops and descriptors into the fixtures)

Full arrays stay in ``--work``; only ``pack``'s outputs are committed.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

IDS = ("0000013", "0000014", "0000015")
#: the crop kept in the fixtures for diagnostics (rows, columns of the model input, pair 0)
CROP = (slice(48, 56), slice(300, 316))


def _cvusa_tree(cvusa: Path, data: Path) -> None:
    """``data`` = a CVUSA root: bingmap/19, streetview/panos, splits/{train,val}-19zl.csv (train empty)."""
    for sub in ("bingmap/19", "streetview/panos", "splits"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    for i in IDS:
        shutil.copy(cvusa / "bingmap" / "19" / f"{i}.jpg", data / "bingmap" / "19")
        shutil.copy(cvusa / "streetview" / "panos" / f"{i}.jpg", data / "streetview" / "panos")
    shutil.copy(cvusa / "splits" / "val-19zl.csv", data / "splits")
    (data / "splits" / "train-19zl.csv").write_text("")


def _git_show(upstream: Path, rev: str, path: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    git_dir = (
        upstream if upstream.name.endswith(".git") or (upstream / "objects").is_dir() else upstream / ".git"
    )
    dest.write_bytes(
        subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"], check=True, stdout=subprocess.PIPE
        ).stdout
    )


def stage_shi(args: argparse.Namespace) -> None:
    """SAFA's / DSM's ``script/data_preparation.py`` (CVUSA block: polar PNGs via scipy.misc.imsave) and
    their test readers (``next_batch_scan``)."""
    root = args.work / args.method
    shutil.rmtree(root, ignore_errors=True)
    script = root / "script"
    reader = {"safa": "input_data_cvusa.py", "dsm": "polar_input_data_orien_FOV_3.py"}[args.method]
    for f in ("data_preparation.py", reader):
        _git_show(args.upstream, args.rev, f"script/{f}", script / f)
    _cvusa_tree(args.cvusa, root / "Data" / "CVUSA")
    # the CVACT blocks that follow the CVUSA one read these folders; empty, they do nothing
    for sub in ("ANU_data_small/satview_polish", "ANU_data_small/streetview"):
        (root / "Data" / sub).mkdir(parents=True)
    subprocess.run([sys.executable, "data_preparation.py"], cwd=script, check=True)
    out: dict[str, np.ndarray] = {}
    import cv2

    polar = [cv2.imread(str(root / "Data/CVUSA/polarmap/19" / f"{i}.png"), cv2.IMREAD_UNCHANGED) for i in IDS]
    out["polar_png"] = np.stack(polar)  # uint8 BGR as cv2 reads the PNGs
    sys.path.insert(0, str(script))
    if args.method == "safa":
        os.chdir(script)  # img_root = '../Data/CVUSA/'
        from input_data_cvusa import InputData  # upstream, unchanged

        sat, grd = InputData(polar=1).next_batch_scan(32)
        out["aerial"], out["ground"] = sat, grd
    else:
        run = script / "run"
        run.mkdir()
        os.chdir(run)  # img_root = '../../Data/CVUSA/'
        from polar_input_data_orien_FOV_3 import InputData  # upstream, unchanged

        for noise in (0, 360):
            np.random.seed(2019)  # noqa: NPY002 (upstream draws from the legacy global RNG, test_cvusa_fov.py)
            polar_sat, _, grd, orien = InputData().next_batch_scan(32, grd_noise=noise, FOV=360)
            out[f"ground_noise{noise}"], out[f"orien_noise{noise}"] = grd, orien
            out["aerial"] = polar_sat
        out["ground"] = out["ground_noise0"]
    np.savez(args.work / f"{args.method}_raw.npz", ids=np.array(IDS), **out)
    print(args.method, {k: (v.shape, v.dtype) for k, v in out.items()})


def stage_l2ltr(args: argparse.Namespace) -> None:
    """L2LTR's ``utils/dataloader_usa.TestDataloader`` (polar 1, img_size 128x512) on the SAFA stage's
    polar PNGs (L2LTR's README: make them with SAFA's / DSM's data_preparation.py)."""
    root = args.work / "l2ltr"
    shutil.rmtree(root, ignore_errors=True)
    _git_show(
        args.upstream, args.rev, "utils/dataloader_usa.py", root / "code" / "utils" / "dataloader_usa.py"
    )
    (root / "code" / "utils" / "__init__.py").write_text("")
    data = root / "Data" / "CVUSA"
    _cvusa_tree(args.cvusa, data)
    shutil.copytree(args.work / args.polar_from / "Data" / "CVUSA" / "polarmap", data / "polarmap")
    sys.path.insert(0, str(root / "code"))
    from utils.dataloader_usa import TestDataloader  # upstream, unchanged

    ns = types.SimpleNamespace(polar=1, dataset_dir=str(data) + "/", img_size=(128, 512))
    ds = TestDataloader(ns)
    grd, sat = zip(*(ds[k] for k in range(len(ds))))
    out = {"ground": np.stack([g.numpy() for g in grd]), "aerial": np.stack([s.numpy() for s in sat])}
    np.savez(args.work / f"l2ltr_{args.polar_from}_raw.npz", ids=np.array(IDS), **out)
    print("l2ltr", args.polar_from, {k: (v.shape, v.dtype) for k, v in out.items()})


def stage_geodtr(args: argparse.Namespace) -> None:
    """GeoDTR's own ``data_preparation.py`` (122x671, ``astype(np.uint8)``, imageio) and its
    ``datasets.cvusa.USADataset`` as ``test.py`` builds it (no augmentation, mode 'val', polar)."""
    root = args.work / "geodtr"
    shutil.rmtree(root, ignore_errors=True)
    code = root / "code"
    for f in (
        "data_preparation.py",
        "datasets/__init__.py",
        "datasets/cvusa.py",
        "datasets/cvact.py",
        "datasets/layoutsim.py",
    ):
        _git_show(args.upstream, args.rev, f, code / f)
    _cvusa_tree(args.cvusa, root / "CVUSA" / "dataset")
    for sub in ("CVACT/ANU_data_small/satview_polish", "CVACT/ANU_data_small/streetview"):
        (root / sub).mkdir(parents=True)
    subprocess.run([sys.executable, str(code / "data_preparation.py")], cwd=root, check=True)
    sys.path.insert(0, str(code))
    from datasets.cvusa import USADataset  # upstream, unchanged

    ds = USADataset(
        data_dir=str(root / "CVUSA" / "dataset") + "/",
        layout_simulation="none",
        sematic_aug="none",
        mode="val",
        is_polar=True,
    )
    items = [ds[k] for k in range(len(ds))]
    out = {
        "ground": np.stack([b["ground"].numpy() for b in items]),
        "aerial": np.stack([b["satellite"].numpy() for b in items]),
    }
    np.savez(args.work / "geodtr_raw.npz", ids=np.array(IDS), **out)
    print("geodtr", {k: (v.shape, v.dtype) for k, v in out.items()})


def stage_tf(args: argparse.Namespace) -> None:
    """Upstream's TF1 graph (SAFA ``SAFA``, DSM ``VGG_13_conv_v2_cir``) with geo-retrieval's deterministic
    fixture weights (``tests/data/upstream/<method>/make_fixtures.py``) on the pixels of the ``shi`` stage."""
    import importlib.util

    here = Path(__file__).resolve()
    spec = importlib.util.spec_from_file_location(
        "mf",
        here.parents[5] / "geo-retrieval" / "tests" / "data" / "upstream" / args.method / "make_fixtures.py",
    )
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    tf = mf._tf_v1()
    script = args.work / f"{args.method}_tf"
    shutil.rmtree(script, ignore_errors=True)
    files = {"safa": ("VGG.py", "spatial_net.py"), "dsm": ("VGG.py", "VGG_cir.py", "cir_net_FOV.py")}[
        args.method
    ]
    for f in files:
        _git_show(args.upstream, args.rev, f"script/{f}", script / f)
    sys.path.insert(0, str(script))
    raw = np.load(args.work / f"{args.method}_raw.npz")
    size = raw["aerial"].shape[1:3]
    sat_x = tf.placeholder(tf.float32, [None, *size, 3], name="sat_x")
    grd_x = tf.placeholder(tf.float32, [None, *raw["ground"].shape[1:3], 3], name="grd_x")
    keep_prob = tf.placeholder(tf.float32)
    if args.method == "safa":
        from spatial_net import SAFA  # upstream, unchanged

        outputs = SAFA(sat_x, grd_x, keep_prob, 8, False)
        names = ("aerial", "ground")
    else:
        from cir_net_FOV import VGG_13_conv_v2_cir  # upstream, unchanged

        sat_m, grd_m, distance, orien = VGG_13_conv_v2_cir(sat_x, grd_x, keep_prob, False)
        outputs = (sat_m, grd_m, distance, orien)
        names = ("aerial", "ground", "distance", "orien")
    variables = tf.global_variables()
    weights = mf.fixture_weights({v.op.name: tuple(v.shape.as_list()) for v in variables})
    res: dict[str, np.ndarray] = {}
    with tf.Session() as sess:
        for v in variables:
            v.load(weights[v.op.name], sess)
        grounds = ["ground"] if args.method == "safa" else ["ground_noise0", "ground_noise360"]
        for g in grounds:
            vals = sess.run(list(outputs), {sat_x: raw["aerial"], grd_x: raw[g], keep_prob: 1.0})
            suffix = "" if g in ("ground", "ground_noise0") else "_noise360"
            res.update({n + suffix: v for n, v in zip(names, vals)})
    np.savez(args.work / f"{args.method}_tf.npz", ids=raw["ids"], **res)
    print(args.method, "tf", {k: v.shape for k, v in res.items()})


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _ours_layout(a: np.ndarray, bgr: bool) -> np.ndarray:
    """(N, H, W, 3) BGR (TF readers) or (N, 3, H, W) RGB (torch readers) -> (N, 3, H, W) RGB float32."""
    if bgr:
        a = a[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a, dtype=np.float32)


def stage_pack(args: argparse.Namespace) -> None:
    """Hashes (sha256 of each (3, H, W) RGB float32 model input, as our readers return it), a crop of pair
    0 and per-channel sums of every input; the TF descriptors of the ``tf`` stage."""
    args.out.mkdir(parents=True, exist_ok=True)
    for name, bgr in (
        ("safa", True),
        ("dsm", True),
        ("l2ltr_safa", False),
        ("l2ltr_dsm", False),
        ("geodtr", False),
    ):
        path = args.work / f"{name}_raw.npz"
        if not path.is_file():
            print("skip", name)
            continue
        raw = np.load(path)
        fx: dict[str, np.ndarray] = {"ids": raw["ids"]}
        views = ["aerial", "ground"] + (["ground_noise360"] if "ground_noise360" in raw.files else [])
        for view in views:
            x = _ours_layout(raw[view], bgr)
            fx[f"{view}_sha256"] = np.array([_sha(v) for v in x])
            fx[f"{view}_sum"] = x.astype(np.float64).sum(axis=(2, 3))
            fx[f"{view}_crop"] = x[0][:, CROP[0], CROP[1]]
            fx[f"{view}_shape"] = np.array(x.shape[1:])
        if "polar_png" in raw.files:
            u8 = _ours_layout(raw["polar_png"], True).astype(np.uint8)
            fx["polar_png_sha256"] = np.array([_sha(v) for v in u8])
        if "orien_noise360" in raw.files:
            fx["orien_noise360"] = raw["orien_noise360"]
            g0, g1 = raw["ground_noise0"], raw["ground_noise360"]
            fx["shifts_noise360"] = np.array(
                [
                    next(s for s in range(g0.shape[2]) if np.array_equal(np.roll(g0[k], s, axis=1), g1[k]))
                    for k in range(len(g0))
                ]
            )
        np.savez_compressed(args.out / f"pixels_{name}.npz", **fx)
        print(name, {k: v.shape for k, v in fx.items()})
    for method in ("safa", "dsm"):
        path = args.work / f"{method}_tf.npz"
        if path.is_file():
            tf_out = dict(np.load(path))
            if "aerial_noise360" in tf_out:  # the aerial branch does not see the ground's roll
                assert np.array_equal(tf_out.pop("aerial_noise360"), tf_out["aerial"])
            if method == "dsm":  # upstream returns the aerial map unnormalised; ours is a unit map
                a = tf_out["aerial"].astype(np.float64)
                tf_out["aerial"] = (
                    a / np.linalg.norm(a.reshape(len(a), -1), axis=1)[:, None, None, None]
                ).astype(np.float32)
            # the descriptors as float16 keep the fixture small (|x| < 0.125: at most 3.1e-5 off)
            for k in ("aerial", "ground", "ground_noise360"):
                if k in tf_out:
                    assert np.abs(tf_out[k]).max() < 0.125
                    tf_out[k] = tf_out[k].astype(np.float16)
            np.savez_compressed(args.out / f"e2e_{method}.npz", **tf_out)
            print("e2e", method, {k: v.shape for k, v in tf_out.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["shi", "l2ltr", "geodtr", "tf", "pack"])
    p.add_argument("--method", choices=["safa", "dsm"])
    p.add_argument("--upstream", type=Path, help="the upstream repository (a checkout or a bare git dir)")
    p.add_argument("--rev", default="HEAD", help="upstream commit")
    p.add_argument("--cvusa", type=Path, default=Path(__file__).parents[1] / "sample4geo" / "cvusa")
    p.add_argument("--polar-from", default="safa", choices=["safa", "dsm"], help="l2ltr: whose polar PNGs")
    p.add_argument("--work", type=Path, default=Path("/tmp/polar_parity"))
    p.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = p.parse_args()
    args.work = args.work.resolve()
    args.cvusa = args.cvusa.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    {"shi": stage_shi, "l2ltr": stage_l2ltr, "geodtr": stage_geodtr, "tf": stage_tf, "pack": stage_pack}[
        args.stage
    ](args)


if __name__ == "__main__":
    main()
