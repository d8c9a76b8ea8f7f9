"""Where a run's backbone weights come from: the cache, an embedded file, a user file, or none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pointpeft_cli.errors import AssetNotCachedError
from pointpeft_cli.store.hashing import sha256_file

RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class BackboneWeights:
    """A pre-trained state dict (None = random init), its sha256 and where it came from."""

    state: dict[str, torch.Tensor] | None
    sha256: str
    source: str


def embedded_weights_path(backbone: str) -> Path | None:
    """The weights file shipped inside the package for `backbone`, if one exists."""
    path = Path(__file__).resolve().parents[1] / "assets" / f"{backbone}.safetensors"
    return path if path.is_file() else None


def resolve_weights(
    backbone: str,
    *,
    pretrained: bool,
    checkpoint: str | None,
    cache_root: Path,
    trust_pickle: bool = False,
) -> BackboneWeights:
    """Finds the backbone weights a run asks for.

    Order: an explicit `checkpoint` file, else the package's embedded weights, else the verified
    cached asset of the same id (`pointpeft download <backbone>`), unless `pretrained` is False.

    Raises:
        AssetNotCachedError: pre-trained weights were asked for and none are available (exit 3).
    """
    from pointpeft_cli.store.checkpoint import (
        checkpoint_sha256,
        load_checkpoint_state,
        read_torch_checkpoint,
    )

    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise AssetNotCachedError(
                f"checkpoint {path} does not exist", hint="check --set model.checkpoint=FILE"
            )
        state = read_torch_checkpoint(path, trust_pickle=trust_pickle)
        return BackboneWeights(state, sha256_file(path), str(path))
    if not pretrained:
        return BackboneWeights(None, RANDOM_INIT, RANDOM_INIT)
    embedded = embedded_weights_path(backbone)
    if embedded is not None:
        state = read_torch_checkpoint(embedded)
        return BackboneWeights(state, sha256_file(embedded), f"embedded:{embedded.name}")
    from pointpeft_cli.store.registry import ASSETS

    if backbone not in ASSETS:
        raise AssetNotCachedError(
            f"no pre-trained weights are available for {backbone}",
            hint="pass --set model.checkpoint=FILE, or --set model.pretrained=false",
        )
    state = load_checkpoint_state(cache_root, backbone)
    return BackboneWeights(state, checkpoint_sha256(cache_root, backbone), f"cache:{backbone}")
