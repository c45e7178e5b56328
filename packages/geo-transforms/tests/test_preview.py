import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image

import geo_transforms.cli
from geo_transforms.cli import main
from geo_transforms.patterns import demo_aerial, demo_panorama
from geo_transforms.preview import LABEL_HEIGHT, render_preview


def test_demo_writes_png_of_expected_size(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["--demo", "--demo-size", "32", "--polar-size", "16", "64", "-o", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        # 6 strips: aerial (V), polar (H), mixed (H), ground views (V), demo panorama (W/2 x W scaled to W), pano views (V)
        v = 64 // 4
        assert image.size == (64, 6 * LABEL_HEIGHT + v + 16 + 16 + v + 32 + v)


def test_aerial_file_without_panorama(tmp_path):
    aerial = (demo_aerial(40).permute(1, 2, 0) * 255).to(torch.uint8).numpy()
    path = tmp_path / "aerial.png"
    Image.fromarray(aerial).save(path)
    out = tmp_path / "sub" / "grid.png"
    assert main([str(path), "--polar-size", "12", "48", "--center", "pixel", "-o", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (48, 4 * LABEL_HEIGHT + 12 + 12 + 12 + 12)


def test_panorama_file(tmp_path):
    pano = torch.rand(3, 20, 80)
    path = tmp_path / "pano.jpg"
    Image.fromarray((pano.permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(path)
    canvas = render_preview(demo_aerial(32), pano, polar_size=(8, 40))
    assert canvas.size == (40, 6 * LABEL_HEIGHT + 10 + 8 + 8 + 10 + 10 + 10)
    out = tmp_path / "grid.png"
    assert (
        main(["--demo", "--demo-size", "32", "--pano", str(path), "--polar-size", "8", "40", "-o", str(out)])
        == 0
    )


def test_errors(tmp_path, capsys):
    out = str(tmp_path / "grid.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["-o", out])  # neither an aerial nor --demo
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.png"), "-o", out])
    assert exit_info.value.code == 2
    assert "no such image" in capsys.readouterr().err
    wide = tmp_path / "wide.png"
    Image.new("RGB", (30, 20)).save(wide)
    with pytest.raises(SystemExit) as exit_info:
        main([str(wide), "-o", out])
    assert exit_info.value.code == 2
    assert "square" in capsys.readouterr().err


def test_demo_panorama_matches_ground_plane_views():
    # the synthetic panorama is rendered from the aerial: cutting a view out of it must agree
    # with projecting the aerial onto the ground plane directly (up to resampling)
    from geo_transforms import ground_plane_view, panorama_to_perspective

    aerial = demo_aerial(128)
    pano = demo_panorama(aerial, (512, 1024), camera_height=2.5, meters_per_pixel=0.25)
    opts = {"camera_height": 2.5, "meters_per_pixel": 0.25, "pitch": -45.0}
    direct, mask = ground_plane_view(aerial[None], 60.0, 60.0, (32, 32), return_mask=True, **opts)
    cut = panorama_to_perspective(pano[None], 60.0, -45.0, 60.0, (32, 32))
    assert mask.float().mean() > 0.9
    error = (direct - cut).abs()[mask.expand_as(direct)]
    assert error.mean() < 0.03


@pytest.mark.parametrize("module", ["geo_transforms.preview", "geo_transforms.cli"])
def test_run_as_module(tmp_path, monkeypatch, module):
    out = tmp_path / "grid.png"
    argv = [
        module,
        "--demo",
        "--demo-size",
        "32",
        "--polar-size",
        "8",
        "32",
        "-o",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(module, run_name="__main__")
    assert exit_info.value.code == 0
    assert out.is_file()


def test_console_script_points_at_the_cli():
    # the installed `geo-transforms-preview` script calls geo_transforms.cli:main
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    line = next(x for x in pyproject.read_text().splitlines() if x.startswith("geo-transforms-preview"))
    assert line.split("=", 1)[1].strip().strip('"') == "geo_transforms.cli:main"
    assert main is geo_transforms.cli.main


@pytest.mark.slow
def test_module_entry_point_subprocess(tmp_path):
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "geo_transforms.preview",
            "--demo",
            "--demo-size",
            "32",
            "--polar-size",
            "8",
            "32",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.is_file()
