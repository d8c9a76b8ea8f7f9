"""Saved-tensor recipes: autograd keeps how to rebuild a tensor instead of the tensor itself.

A frozen backbone's backward needs many activations only as inputs to cheap, exact functions
of other tensors that autograd keeps anyway (a block's output is the sum of kept tensors; a
gathered tensor is an index_select of a kept one). Inside `saved_as_recipe`, every saved view
of such a tensor is packed as its recipe, and backward rebuilds the value once, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


class _Recipe:
    """One saved view of a recipe's target; the first unpack rebuilds the target for all."""

    __slots__ = ("autocast", "geometry", "rebuild", "shared")

    def __init__(
        self, rebuild: Callable[[], Tensor], view: Tensor, shared: dict, autocast: dict
    ) -> None:
        self.rebuild, self.shared, self.autocast = rebuild, shared, autocast
        self.geometry = (view.shape, view.stride(), view.storage_offset())

    def tensor(self) -> Tensor:
        value = self.shared.get("value")
        if value is None:
            # backward runs outside the forward's autocast region: restore it, or a recipe with
            # a matmul would rebuild in another precision (or fail on mixed dtypes)
            with torch.no_grad(), torch.autocast(**self.autocast):
                value = self.shared["value"] = self.rebuild()
        return value.as_strided(*self.geometry)


def _unpack(saved: Tensor | _Recipe) -> Tensor:
    return saved.tensor() if isinstance(saved, _Recipe) else saved


@contextmanager
def saved_as_recipe(
    target: Tensor, rebuild: Callable[[], Tensor], enabled: bool = True
) -> Iterator[None]:
    """Inside: what autograd saves of `target`'s storage is kept as `rebuild`, not as data.

    `rebuild()` must return `target`'s exact value, contiguous, from tensors that stay saved
    anyway (a recipe that holds tensors nothing else keeps saves nothing). It runs without
    autograd and under the autocast state of the forward, once, when backward first needs one
    of the saved views; the rebuilt tensor lives until the last of them is released. Inactive
    when `enabled` is False or autograd is off.

    Raises:
        ValueError: `target` is not a contiguous tensor that owns its whole storage (views of
            it are then rebuilt by their strides into the rebuilt storage).
    """
    if not (enabled and torch.is_grad_enabled()):
        yield
        return
    storage = target.untyped_storage()
    if not target.is_contiguous() or target.storage_offset() or storage.nbytes() != target.nbytes:
        raise ValueError("a recipe target must be a contiguous tensor owning its storage")
    address, dtype = storage.data_ptr(), target.dtype
    shared: dict = {}
    device = target.device.type
    autocast = {
        "device_type": device,
        "dtype": torch.get_autocast_dtype(device),
        "enabled": torch.is_autocast_enabled(device),
    }

    def pack(t: Tensor) -> Tensor | _Recipe:
        if t.dtype == dtype and t.untyped_storage().data_ptr() == address:
            return _Recipe(rebuild, t, shared, autocast)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
        yield
