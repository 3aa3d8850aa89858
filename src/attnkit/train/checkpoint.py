"""Checkpoints that resume exactly: safetensors weights plus JSON state.

A checkpoint is a directory::

    model.safetensors   the model's weights after the last finished epoch
    best.safetensors    the weights of the best validation epoch (early stopping restores them)
    optimizer.pt        the optimizer's state dict (torch.save; loaded with weights_only=True)
    state.json          epoch, step, history, early-stopping counters, RNG states (torch, CUDA,
                        numpy, random), the training config and the model's config dataclass

Weights round-trip bit for bit; with the RNG states and the epoch-seeded sampler, a run that
is interrupted and resumed ends with the same parameters as one that was not.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Checkpoint",
    "TrainState",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = 1


@dataclass
class TrainState:
    """The trainer's progress, everything besides weights and optimizer state."""

    epoch: int = 0  # last finished epoch (0 before the first)
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    best_val_loss: float = float("inf")  # lowest validation loss so far
    best_epoch: int | None = None  # the epoch that reached it
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    warnings: list[str] = field(default_factory=list)  # train/validation gap warnings so far


@dataclass
class Checkpoint:
    """A loaded checkpoint; tensors are on the CPU."""

    weights: dict[str, Tensor]  # the model's state dict after the last finished epoch
    best: dict[str, Tensor] | None  # the best epoch's state dict, if one was saved
    optimizer: dict[str, Any]  # the optimizer's state dict
    state: TrainState
    rng: dict[str, Any]  # RNG states as written by get_rng_state
    train_config: dict[str, Any]  # the TrainConfig's fields
    model_config: dict[str, Any] | None  # {"type": "module.Class", "fields": {...}}


def _b64(tensor: Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def get_rng_state() -> dict[str, Any]:
    """The states of torch's CPU and CUDA generators, numpy's and Python's, as JSON values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "random": [version, list(internal), gauss],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`get_rng_state`."""
    torch.set_rng_state(_unb64(rng["torch"]))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in rng["cuda"]])
    kind, keys, position, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = rng["random"]
    random.setstate((version, tuple(internal), gauss))


def _config_json(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"model config must be a dataclass instance, got {type(config).__name__}")
    kind = type(config)
    return {"type": f"{kind.__module__}.{kind.__qualname__}", "fields": dataclasses.asdict(config)}


def _cpu_copy(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    # one contiguous copy per name, so that tied weights save as separate tensors
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in weights.items()}


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as error:  # pragma: no cover - safetensors ships with the hf extra
        raise ImportError("checkpoints need safetensors: pip install safetensors") from error
    return safetensors.torch


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    *,
    best: dict[str, Tensor] | None = None,
    train_config: Any = None,
    model_config: Any = None,
) -> Path:
    """Write a checkpoint directory (replacing one that is there) and return its path.

    The files are written to ``<directory>.tmp`` first and moved in place at the end, so an
    interruption while writing leaves the previous checkpoint whole.
    """
    st = _safetensors()
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    st.save_file(_cpu_copy(model.state_dict()), str(tmp / "model.safetensors"))
    if best is not None:
        st.save_file(_cpu_copy(best), str(tmp / "best.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    payload = {
        "format": FORMAT,
        "state": dataclasses.asdict(state),
        "rng": get_rng_state(),
        "train_config": dataclasses.asdict(train_config) if train_config is not None else {},
        "model_config": _config_json(model_config),
    }
    (tmp / "state.json").write_text(json.dumps(payload, default=str))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    st = _safetensors()
    directory = Path(directory)
    if not (directory / "state.json").is_file():
        raise FileNotFoundError(f"no checkpoint in {directory} (state.json is missing)")
    payload = json.loads((directory / "state.json").read_text())
    if payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint format must be {FORMAT}, got {payload.get('format')!r}")
    best_path = directory / "best.safetensors"
    raw = payload["state"]
    state = TrainState(**{**raw, "best_val_loss": float(raw["best_val_loss"])})
    return Checkpoint(
        weights=st.load_file(str(directory / "model.safetensors")),
        best=st.load_file(str(best_path)) if best_path.is_file() else None,
        optimizer=torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True),
        state=state,
        rng=payload["rng"],
        train_config=payload["train_config"],
        model_config=payload["model_config"],
    )
