"""Two gloo processes through the trainer (torchrun): ranks stay in sync and match one process."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch

    torch.set_num_threads(1)
    from geo_retrieval.config import ScheduleConfig
    from geo_retrieval.testing import ScaledInfoNCE, SyntheticPairs, TinyCrossView, tiny_recipe
    from geo_retrieval.training import Trainer, split_holdout

    recipe = tiny_recipe(schedule=ScheduleConfig("cosine", warmup_steps=1))
    out = sys.argv[1]
    train, val = split_holdout(SyntheticPairs(40, aerial_size=32, ground_size=(16, 64), seed=3), fraction=0.2)
    torch.manual_seed(0)
    trainer = Trainer(TinyCrossView(dropout=0.0), recipe, train, val, out_dir=out, seed=1, loss=ScaledInfoNCE(),
                      device="cpu", max_steps=5)  # no dropout: per-rank randomness would break the comparison
    result = trainer.fit()
    state = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    state["logit_scale"] = trainer.loss_fn.logit_scale.detach().clone()
    torch.save({"state": state, "history": result.history, "world": trainer.world_size,
                "step": result.global_step}, os.path.join(out, f"rank{trainer.rank}.pt"))
    """
)


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow  # three interpreter start-ups (~60 s on a shared 2-core machine)
def test_two_gloo_ranks_stay_in_sync_and_match_one_process(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            "localhost:0",
            str(script),
            str(tmp_path / "ddp"),
        ],
        tmp_path,
    )
    _run([sys.executable, str(script), str(tmp_path / "single")], tmp_path)

    r0 = torch.load(tmp_path / "ddp/rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp/rank1.pt", weights_only=True)
    one = torch.load(tmp_path / "single/rank0.pt", weights_only=True)
    assert (r0["world"], r1["world"], one["world"]) == (2, 2, 1)
    assert r0["step"] == r1["step"] == one["step"] == 5
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), f"ranks diverged at {key}"
        # global unique-ID batch split over 2 ranks + gathered negatives == one process, same batch
        torch.testing.assert_close(r0["state"][key], one["state"][key], rtol=1e-4, atol=1e-5)
    assert r0["history"] == r1["history"]  # rank 0 evaluated and broadcast the metrics
    assert r0["history"][0]["val/R@1"] == pytest.approx(one["history"][0]["val/R@1"])
    # only rank 0 wrote checkpoints, with plain keys (no "module." prefix)
    from geo_retrieval.checkpoint import load_weights

    weights = load_weights(tmp_path / "ddp/last/model.safetensors")
    assert not any(k.startswith("module.") for k in weights)
    assert set(weights) == {k for k in r0["state"] if k != "logit_scale"}
