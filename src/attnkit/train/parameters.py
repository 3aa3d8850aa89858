"""The parameter count of a model: the one definition every table, baseline match and demo uses."""

from __future__ import annotations

from torch import nn

__all__ = ["count_parameters"]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """The number of scalar parameters of ``model`` (each shared tensor counted once).

    Args:
        model: any ``nn.Module``.
        trainable_only: count only parameters with ``requires_grad`` (e.g. leave out frozen
            pretrained embeddings).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
