"""Pre-trained values of the backbone tensors Point-PEFT tunes, for the frozen retrieval pass."""

from __future__ import annotations

from torch import Tensor, nn


def _buffer_name(key: str) -> str:
    return key.replace(".", "__")


class FrozenSnapshot(nn.Module):
    """Non-persistent buffer copies of tuned backbone tensors (biases, final norm, cls).

    Point-PEFT tunes some backbone tensors BitFit-style, but its retrieval query must stay the
    frozen pre-trained backbone's feature (the memory bank was built with it). The copies are
    taken at construction and again by `load_pretrained`; they move with `.to()` and are never
    saved (the base checkpoint is their source).
    """

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.keys = list(tensors)
        for key, value in tensors.items():
            self.register_buffer(_buffer_name(key), value.detach().clone(), persistent=False)

    def capture(self, tensors: dict[str, Tensor]) -> None:
        """Copy the current values of `tensors` (same keys as at construction)."""
        for key in self.keys:
            getattr(self, _buffer_name(key)).copy_(tensors[key].detach())

    def values(self) -> dict[str, Tensor]:
        """Key -> stored tensor."""
        return {key: getattr(self, _buffer_name(key)) for key in self.keys}
