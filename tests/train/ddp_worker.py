"""One process of the DDP equivalence test (launched by torchrun from test_ddp.py)."""

import sys

import torch
from toy import mlp, mse, regression

from attnkit.train import TrainConfig, Trainer
from attnkit.train.distributed import init_from_env, rank_and_world


def main(out: str) -> None:
    assert init_from_env("gloo")
    rank, world = rank_and_world()
    torch.manual_seed(0)
    model = mlp(hidden=16)
    config = TrainConfig(
        epochs=1, batch_size=8, lr=1e-2, max_steps=1, patience=None, progress=False, device="cpu"
    )
    result = Trainer(model, config, loss=mse).fit(regression(64), regression(16, seed=1))
    if rank == 0:
        torch.save({"state": model.state_dict(), "world": world, "steps": result.steps}, out)
    torch.distributed.barrier()  # no rank tears gloo down while another still uses it
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
