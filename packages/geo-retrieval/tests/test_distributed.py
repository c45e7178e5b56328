import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geo_retrieval import distributed as gd
from geo_transforms.testing import assert_close

HERE = Path(__file__).parent


def _worker_module():
    spec = importlib.util.spec_from_file_location("_ddp_worker", HERE / "_ddp_worker.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_single_process_fallbacks():
    assert not gd.is_distributed()
    assert gd.world_size() == 1 and gd.rank() == 0 and gd.is_main_process()
    x = torch.rand(3, 2, requires_grad=True)
    assert gd.all_gather_with_grad(x) is x
    gd.barrier()
    with pytest.raises(TypeError):
        gd.all_gather_with_grad([1, 2])
    assert gd.broadcast_object({"a": 1}) == {"a": 1}
    t = torch.ones(2)
    gd.all_reduce_mean_([t])
    assert torch.equal(t, torch.ones(2))
    assert gd.init_distributed("cpu") == torch.device("cpu") and not gd.is_distributed()


def test_one_module_one_is_distributed():
    import geo_retrieval
    from geo_retrieval import training

    assert training.is_distributed is gd.is_distributed is geo_retrieval.is_distributed
    assert training.init_distributed is gd.init_distributed and training.unwrap_model is gd.unwrap_model
    assert importlib.util.find_spec("geo_retrieval.training.ddp") is None
    inner = torch.nn.Linear(2, 2)
    assert gd.unwrap_model(torch.nn.DataParallel(inner)) is inner


def test_one_rank_group_is_not_distributed(tmp_path, monkeypatch):
    """A process group of one rank counts as not distributed: every helper is the single-process path."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "0")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert not gd.is_distributed() and gd.world_size() == 1 and gd.rank() == 0
        x = torch.rand(2, requires_grad=True)
        assert gd.all_gather_with_grad(x) is x and gd.broadcast_object(5) == 5
    finally:
        dist.destroy_process_group()


def test_ddp_gather_gradients_equal_full_batch(tmp_path):
    """2 gloo ranks x 4 pairs with DDP == one process with the 8-pair batch (loss and gradients)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(HERE / "_ddp_worker.py"), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    worker = _worker_module()
    for name, loss_fn in worker.losses().items():
        model, ground, aerial, utm = worker.make_problem()
        g, a = model(ground, aerial)
        sim = g @ a.T
        loss = loss_fn(sim, utm=utm) if name == "triplet" else loss_fn(sim)
        loss.backward()
        expected = {k: p.grad for k, p in model.named_parameters()}
        expected.update({f"loss.{k}": p.grad for k, p in loss_fn.named_parameters()})
        for path in ("functional", "legacy"):
            for rank in (0, 1):
                res = torch.load(tmp_path / f"rank{rank}_{path}.pt", weights_only=True)[name]
                assert_close(res["gathered"], g.detach())  # rank order preserved
                assert_close(res["loss"], loss.detach())
                assert set(res["grads"]) == set(expected)
                for k, grad in expected.items():
                    assert_close(res["grads"][k], grad, rtol=1e-9, atol=1e-12)
