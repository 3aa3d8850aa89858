import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy import mlp, mse, regression

from attnkit.train import TrainConfig, Trainer

HERE = Path(__file__).parent


def _single_process(batch_size):
    torch.manual_seed(0)
    model = mlp(hidden=16)
    config = TrainConfig(
        epochs=1,
        batch_size=batch_size,
        lr=1e-2,
        max_steps=1,
        patience=None,
        progress=False,
        device="cpu",
    )
    Trainer(model, config, loss=mse).fit(regression(64), regression(16, seed=1))
    return model.state_dict()


@pytest.mark.slow
def test_two_processes_take_the_step_of_one_process_on_the_combined_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE / "ddp_worker.py"),
        str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(out, weights_only=True)
    assert saved["world"] == 2 and saved["steps"] == 1

    combined = _single_process(batch_size=16)  # two shards of 8 = one batch of 16
    local = _single_process(batch_size=8)  # what one rank would do alone
    torch.manual_seed(0)
    initial = mlp(hidden=16).state_dict()
    for name, tensor in combined.items():
        assert torch.allclose(saved["state"][name], tensor, atol=1e-6, rtol=0), name
    assert any(not torch.equal(combined[k], initial[k]) for k in combined)
    assert any(not torch.allclose(saved["state"][k], local[k], atol=1e-4) for k in combined)
