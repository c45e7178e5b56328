import os
import pickle

import pytest
import torch

from geo_retrieval.checkpoint import (
    UnsafeCheckpointError,
    atomic_save,
    atomic_write_bytes,
    load_trainer_state,
    load_weights,
    read_metadata,
    save_trainer_state,
    save_weights,
    strip_prefixes,
)
from geo_transforms.testing import BaseTester


class _Evil:
    """Unpickling this would create the marker file (``open(marker, "w")``)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class TestWeights(BaseTester):
    def test_round_trip_with_metadata(self, tmp_path):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        path = save_weights(model, tmp_path / "m.safetensors", {"backbone": "tiny", "polar": "safa"})
        loaded = load_weights(path)
        assert set(loaded) == set(model.state_dict())
        for k, v in model.state_dict().items():
            self.assert_close(loaded[k], v)
        assert read_metadata(path) == {"backbone": "tiny", "polar": "safa"}
        fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        fresh.load_state_dict(loaded, strict=True)

    def test_shared_storage(self, tmp_path):
        lin = torch.nn.Linear(4, 4)
        tied = torch.nn.ModuleDict({"a": lin, "b": lin})  # same parameters under two names
        sd = tied.state_dict()
        sd["view"] = lin.weight[:2]  # a view into shared storage
        path = save_weights(sd, tmp_path / "t.safetensors")
        loaded = load_weights(path)
        self.assert_close(loaded["a.weight"], loaded["b.weight"])
        self.assert_close(loaded["view"], lin.weight[:2].detach())

    def test_pt_with_prefixes(self, tmp_path):
        sd = {"module._orig_mod.fc.weight": torch.rand(2, 2)}
        torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "w.pth")
        loaded = strip_prefixes(load_weights(tmp_path / "w.pth"))
        assert list(loaded) == ["fc.weight"]
        self.assert_close(loaded["fc.weight"], sd["module._orig_mod.fc.weight"])

    def test_exception(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            load_weights(tmp_path / "missing.safetensors")
        (tmp_path / "w.npz").write_bytes(b"x")
        with pytest.raises(ValueError, match="extension"):
            load_weights(tmp_path / "w.npz")
        with pytest.raises(ValueError, match=r"\.safetensors"):
            save_weights({"a": torch.zeros(1)}, tmp_path / "w.pt")
        with pytest.raises(TypeError, match="metadata"):
            save_weights({"a": torch.zeros(1)}, tmp_path / "w.safetensors", {"epoch": 3})
        with pytest.raises(ValueError, match="two keys"):
            strip_prefixes({"module.a": 1, "a": 2})


class TestUnsafePickles:
    @pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
    def test_load_weights_refuses_and_never_runs_code(self, tmp_path, suffix):
        marker = tmp_path / "pwned"
        path = tmp_path / f"evil{suffix}"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil(str(marker))}, path)
        with pytest.raises(UnsafeCheckpointError, match=r"io\.open") as info:
            load_weights(path)
        assert info.value.globals == ["io.open"]  # builtins.open pickles as io.open
        assert not marker.exists()

    def test_load_trainer_state_refuses_custom_class(self, tmp_path):
        marker = tmp_path / "pwned"
        path = tmp_path / "state.pt"
        with open(path, "wb") as fh:  # a plain pickle with a custom global, not torch's zip format
            pickle.dump({"opt": _Evil(str(marker))}, fh, protocol=2)
        with pytest.raises(UnsafeCheckpointError):
            load_trainer_state(path)
        torch.save({"epoch": 1, "obj": _Evil(str(marker))}, path)
        with pytest.raises(UnsafeCheckpointError, match=r"io\.open"):
            load_trainer_state(path)
        assert not marker.exists()
        assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)


class TestTrainerState(BaseTester):
    def test_round_trip(self, tmp_path):
        opt = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
        opt.zero_grad()
        sum(p.sum() for group in opt.param_groups for p in group["params"]).backward()
        opt.step()
        state = {"optimizer": opt.state_dict(), "epoch": 4, "rng": torch.get_rng_state(), "best": None}
        path = save_trainer_state(state, tmp_path / "trainer.pt")
        loaded = load_trainer_state(path)
        assert loaded["epoch"] == 4 and loaded["best"] is None
        self.assert_close(loaded["rng"], state["rng"])
        opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
        opt2.load_state_dict(loaded["optimizer"])
        self.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])

    def test_accepts_module_state_dict(self, tmp_path):
        module = torch.nn.Linear(3, 2)  # state_dict() is an OrderedDict, which weights_only loads
        path = save_trainer_state({"ema": module.state_dict()}, tmp_path / "ema.pt")
        self.assert_close(load_trainer_state(path)["ema"]["weight"], module.weight.detach())

    def test_refuses_objects_before_writing(self, tmp_path):
        with pytest.raises(TypeError, match="may hold only"):
            save_trainer_state({"model": torch.nn.Linear(2, 2)}, tmp_path / "s.pt")
        assert not (tmp_path / "s.pt").exists()


class TestAtomicWrite:
    def test_writer_raises_leaves_nothing(self, tmp_path):
        target = tmp_path / "out.bin"

        def writer(fh):
            fh.write(b"partial")
            raise RuntimeError("disk on fire")

        with pytest.raises(RuntimeError, match="disk on fire"):
            atomic_save(target, writer)
        assert not target.exists()
        assert os.listdir(tmp_path) == []

    def test_old_file_survives_failed_write(self, tmp_path):
        target = atomic_write_bytes(tmp_path / "out.bin", b"old")

        def writer(fh):
            fh.write(b"new-but-partial")
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            atomic_save(target, writer)
        assert target.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["out.bin"]
        atomic_write_bytes(target, b"new")
        assert target.read_bytes() == b"new"
        with pytest.raises(TypeError):
            atomic_write_bytes(target, "text")


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """``mkstemp`` creates 0600 files; a checkpoint, a figure or a JSON written atomically must be as
    readable as one written with open() (0666 & ~umask), e.g. for the other users of a shared run folder."""
    import os

    from geo_retrieval.checkpoint import atomic_write_bytes

    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
