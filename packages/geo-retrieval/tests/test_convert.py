import pytest
import torch
from torch import nn
from torch.nn.utils import spectral_norm

from geo_retrieval import (
    UnsafeCheckpointError,
    bake_spectral_norm,
    convert_toker,
    load_weights,
    read_metadata,
)
from geo_retrieval.convert import main
from geo_transforms.testing import BaseTester


class _Gen(nn.Module):
    def __init__(self, sn=True):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        self.conv1 = wrap(nn.Conv2d(3, 8, 7, padding=3))
        self.norm = nn.InstanceNorm2d(8, affine=True)
        self.conv2 = wrap(nn.Conv2d(8, 4, 3, padding=1))
        self.last = nn.Conv2d(4, 3, 3, padding=1)  # no SN on the last conv, as Toker's G

    def forward(self, x):
        return self.last(self.conv2(self.norm(self.conv1(x))))


class _Disc(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = spectral_norm(nn.Conv2d(6, 4, 4, stride=2))
        self.fc = spectral_norm(nn.Linear(5, 3))

    def forward(self, x):
        return self.conv(x)


def _fake_toker(path):
    torch.manual_seed(0)
    gen, disc, ret = _Gen(), _Disc(), nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    gen.train(), disc.train()
    for _ in range(3):  # power iterations move u, v away from their init
        gen(torch.rand(1, 3, 8, 8))
        disc(torch.rand(1, 6, 8, 8))
        disc.fc(torch.rand(1, 5))
    opts = [torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.5, 0.999)) for m in (gen, disc, ret)]
    for m, opt in zip((gen, disc, ret), opts):
        opt.zero_grad()
        sum(p.sum() for p in m.parameters()).backward()
        opt.step()

    def prefixed(m):
        return {f"module.{k}": v for k, v in m.state_dict().items()}

    ckpt = {
        "generator_model_dict": prefixed(gen),
        "discriminator_model_dict": prefixed(disc),
        "retriebal_model_dict": prefixed(ret),
        "optimizer_G_dict": opts[0].state_dict(),
        "optimizer_D_dict": opts[1].state_dict(),
        "optimizer_R_dict": opts[2].state_dict(),
        "last_epoch": 187,
        "best_acc": 61.2,
    }
    torch.save(ckpt, path)
    return gen, disc, ret


def _eval_weights(module):
    """The weights torch's spectral_norm uses in eval mode (no power iteration)."""
    module.eval()
    out = {}
    for name, sub in module.named_modules():
        if hasattr(sub, "weight_orig"):
            sub(
                torch.rand(
                    1, *((sub.in_features,) if isinstance(sub, nn.Linear) else (sub.in_channels, 8, 8))
                )
            )
            out[f"{name}.weight"] = sub.weight.detach().clone()
    return out


class TestConvertToker(BaseTester):
    def test_bakes_spectral_norm(self, tmp_path):
        gen, disc, ret = _fake_toker(tmp_path / "toker.pth")
        paths = convert_toker(tmp_path / "toker.pth", tmp_path / "out", components_only=True)
        assert set(paths) == {"generator", "discriminator", "retrieval"}
        for name, module in (("generator", gen), ("discriminator", disc)):
            baked = load_weights(paths[name])
            assert not any(k.endswith(("weight_orig", "weight_u", "weight_v")) for k in baked)
            assert not any(k.startswith("module.") for k in baked)
            expected = _eval_weights(module)
            assert expected  # the fake really has SN layers
            for key, w in expected.items():
                self.assert_close(baked[key], w)
                assert not torch.allclose(baked[key], module.state_dict()[key + "_orig"])
        retrieval = load_weights(paths["retrieval"])
        for k, v in ret.state_dict().items():
            self.assert_close(retrieval[k], v)
        meta = read_metadata(paths["generator"])
        assert meta["component"] == "generator" and meta["last_epoch"] == "187" and meta["best_acc"] == "61.2"
        assert len(meta["source_sha256"]) == 64

    def test_baked_weights_load_into_plain_modules(self, tmp_path):
        gen, _, _ = _fake_toker(tmp_path / "toker.pth")
        paths = convert_toker(tmp_path / "toker.pth", tmp_path / "out", components_only=True)
        plain = _Gen(sn=False)
        plain.load_state_dict(load_weights(paths["generator"]), strict=True)
        gen.eval(), plain.eval()
        x = torch.rand(1, 3, 8, 8)
        self.assert_close(plain(x), gen(x))

    def test_transposed_dim(self):
        deconv = spectral_norm(nn.ConvTranspose2d(3, 5, 3), dim=1)
        deconv(torch.rand(1, 3, 4, 4))
        deconv.eval()
        deconv(torch.rand(1, 3, 4, 4))
        baked = bake_spectral_norm(deconv.state_dict())
        self.assert_close(baked["weight"], deconv.weight.detach())

    def test_cli_and_errors(self, tmp_path, capsys):
        _fake_toker(tmp_path / "toker.pth")
        assert main(["toker", str(tmp_path / "toker.pth"), str(tmp_path / "cli"), "--components-only"]) == 0
        assert (tmp_path / "cli" / "retrieval.safetensors").is_file()
        assert "retrieval" in capsys.readouterr().out
        torch.save({"something": {}}, tmp_path / "other.pth")
        with pytest.raises(ValueError, match="retriebal_model_dict"):
            convert_toker(tmp_path / "other.pth", tmp_path / "x")
        with pytest.raises(ValueError, match="incomplete spectral-norm triple"):
            bake_spectral_norm({"a.weight_orig": torch.rand(2, 2), "a.weight_u": torch.rand(2)})

    def test_refuses_unsafe_pickle(self, tmp_path):
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        torch.save({"generator_model_dict": {}, "extra": Evil()}, tmp_path / "evil.pth")
        with pytest.raises(UnsafeCheckpointError):
            convert_toker(tmp_path / "evil.pth", tmp_path / "out")
        assert not marker.exists()


class TestConvertCliFaults:
    """Every fault of ``python -m geo_retrieval.convert`` a user can fix: one ``error:`` line that
    names the file, exit status 2, no traceback."""

    def _run(self, argv, capsys):
        rc = main(argv)
        err = capsys.readouterr().err
        return rc, err

    def test_missing_file(self, tmp_path, capsys):
        rc, err = self._run(["toker", str(tmp_path / "none.pth"), str(tmp_path / "out")], capsys)
        assert rc == 2 and err.count("\n") == 1 and "none.pth" in err and err.startswith("error: ")

    @pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
    def test_damaged_file(self, damage, tmp_path, capsys):
        _fake_toker(tmp_path / "toker.pth")
        data = (tmp_path / "toker.pth").read_bytes()
        bad = tmp_path / "bad.pth"
        bad.write_bytes(
            {"truncated": data[: len(data) // 2], "garbage": b"this is no checkpoint" * 9, "empty": b""}[
                damage
            ]
        )
        rc, err = self._run(["toker", str(bad), str(tmp_path / "out")], capsys)
        assert rc == 2 and err.count("\n") == 1 and str(bad) in err
        assert "unsafe" not in err  # damaged is not the same fault as dangerous
        assert "Traceback" not in err

    def test_unsafe_pickle(self, tmp_path, capsys):
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        torch.save({"generator_model_dict": {}, "extra": Evil()}, tmp_path / "evil.pth")
        rc, err = self._run(["toker", str(tmp_path / "evil.pth"), str(tmp_path / "out")], capsys)
        assert rc == 2 and "evil.pth" in err and "weights_only" in err and err.count("\n") == 1
        assert not marker.exists()

    def test_another_kind_of_checkpoint(self, tmp_path, capsys):
        torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "other.pth")
        rc, err = self._run(["toker", str(tmp_path / "other.pth"), str(tmp_path / "out")], capsys)
        assert rc == 2 and "other.pth" in err and "Toker" in err

    def test_out_dir_is_a_file(self, tmp_path, capsys):
        _fake_toker(tmp_path / "toker.pth")
        (tmp_path / "taken").write_text("x")
        rc, err = self._run(["toker", str(tmp_path / "toker.pth"), str(tmp_path / "taken")], capsys)
        assert rc == 2 and "taken" in err and err.count("\n") == 1
