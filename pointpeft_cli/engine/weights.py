"""Where a run's backbone weights come from: the cache, an embedded file, a user file, or none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pointpeft_cli.errors import AssetNotCachedError, ChecksumMismatchError, CorruptFileError
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


def _float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Shipped weights are float16 to stay small; the model computes in float32.
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_embedded(backbone: str) -> BackboneWeights:
    """The package's own weights for `backbone`, verified against the registry's sha256.

    Raises:
        CorruptFileError: the registry names embedded weights the installation lacks (exit 4).
        ChecksumMismatchError: the shipped file differs from the registry's sha256 (exit 4).
        AssetNotCachedError: no embedded weights exist for `backbone` (exit 3).
    """
    from pointpeft_cli.store.checkpoint import read_torch_checkpoint
    from pointpeft_cli.store.registry import ASSETS

    path = embedded_weights_path(backbone)
    asset = ASSETS.get(backbone)
    pinned = asset.file.sha256 if asset is not None and asset.kind == "embedded" else None
    if path is None:
        if pinned is not None:
            raise CorruptFileError(
                f"the installed package lacks its embedded {backbone} weights "
                f"(pointpeft_cli/assets/{backbone}.safetensors)",
                hint="reinstall pointpeft, or rebuild them with `pointpeft pretrain`",
            )
        raise AssetNotCachedError(f"no embedded weights for {backbone}")
    digest = sha256_file(path)
    if pinned is not None and digest != pinned:
        raise ChecksumMismatchError(
            f"{path} does not match the sha256 in the registry ({digest[:12]}... != "
            f"{pinned[:12]}...)",
            hint="reinstall pointpeft; a locally rebuilt file can be used with "
            "--set model.checkpoint=FILE",
        )
    state = _float32(read_torch_checkpoint(path))
    return BackboneWeights(state, digest, f"embedded:{path.name}")


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
        state = _float32(read_torch_checkpoint(path, trust_pickle=trust_pickle))
        return BackboneWeights(state, sha256_file(path), str(path))
    if not pretrained:
        return BackboneWeights(None, RANDOM_INIT, RANDOM_INIT)
    from pointpeft_cli.store.registry import ASSETS

    embedded_entry = backbone in ASSETS and ASSETS[backbone].kind == "embedded"
    if embedded_entry or embedded_weights_path(backbone) is not None:
        return load_embedded(backbone)
    if backbone not in ASSETS:
        raise AssetNotCachedError(
            f"no pre-trained weights are available for {backbone}",
            hint="pass --set model.checkpoint=FILE, or --set model.pretrained=false",
        )
    state = load_checkpoint_state(cache_root, backbone)
    return BackboneWeights(state, checkpoint_sha256(cache_root, backbone), f"cache:{backbone}")
