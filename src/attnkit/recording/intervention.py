"""``intervene()``: run a model with its attention weights replaced.

Inside the block, each chosen layer computes its weights ``A`` ``(B, H, Q, K)`` as usual, then
uses ``edit(layer, A)`` in their place: the layer's output is ``edit(layer, A) @ V``. This is how
the faithfulness checks ask "would the model decide otherwise if it attended otherwise?"
(Jain & Wallace 2019; Serrano & Smith 2019). Edits may be differentiable: gradients flow to any
tensor the edit uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from attnkit.recording.hooks import check_layers, hooked

__all__ = ["intervene"]


@contextmanager
def intervene(
    model: nn.Module,
    edit: Callable[[str, Tensor], Tensor],
    layers: Sequence[str] | None = None,
) -> Iterator[None]:
    """Replace the attention weights of ``layers`` (default all) by ``edit(layer, weights)``.

    ``edit`` receives the layer's name and its ``(B, H, Q, K)`` weights and returns weights of
    the same shape. A :func:`~attnkit.capture` block open at the same time records the edited
    weights. The model is restored when the block exits.
    """
    chosen = check_layers(model, layers)

    def checked(layer: str, weights: Tensor) -> Tensor:
        edited = edit(layer, weights)
        if edited.shape != weights.shape:
            raise ValueError(
                f"edit must return weights of shape {tuple(weights.shape)} for layer {layer!r}, "
                f"got {tuple(edited.shape)}"
            )
        return edited

    with hooked(model, chosen, edit=checked):
        yield
