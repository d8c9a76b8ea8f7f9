"""Structural trainability per method, parameter counts, trainable state, optimizer groups.

`point-peft` trains exactly the original's set (method.md §7, decision 3), decided by module
type and declared names, never by substring matching:
  - every parameter of a `PeftModule` (adapters, out_transform, attn1, norm3);
  - hook parameters declared in a class's `PEFT_PARAMS` (`prompt_embeddings`, `prompt_cor`);
  - backbone tensors declared in `Block.TUNED_BIASES` and the model's `TUNED_WITH_PEFT`
    (norm1/norm2/fc1/fc2/attn.proj biases, final norm, cls token and position);
  - the head (`model.HEAD`).
`full` trains everything; `linear` trains the head only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from pointpeft_cli.errors import LayoutMismatchError
from pointpeft_cli.peft.adapter import PeftModule


def _prefixed(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def head_names(model: nn.Module) -> set[str]:
    """State-dict keys (parameters and buffers) of the class head."""
    head = getattr(model, model.HEAD)
    return {_prefixed(model.HEAD, k) for k in head.state_dict()}


def peft_names(model: nn.Module) -> set[str]:
    """State-dict keys added by Point-PEFT: PEFT modules and declared hook parameters."""
    out: set[str] = set()
    for mname, module in model.named_modules():
        if isinstance(module, PeftModule):
            out |= {_prefixed(mname, k) for k in module.state_dict()}
        for pname in getattr(type(module), "PEFT_PARAMS", ()):
            if getattr(module, pname, None) is not None:
                out.add(_prefixed(mname, pname))
    return out


def tuned_backbone_names(model: nn.Module) -> set[str]:
    """Backbone tensors Point-PEFT tunes (declared per block type and on the model)."""
    out = set(getattr(model, "TUNED_WITH_PEFT", ()))
    for mname, module in model.named_modules():
        out |= {_prefixed(mname, n) for n in getattr(type(module), "TUNED_BIASES", ())}
    return out


def backbone_keys(model: nn.Module) -> set[str]:
    """Model keys a pre-trained checkpoint must provide (load_pretrained refuses otherwise)."""
    optional = head_names(model) | peft_names(model)
    if not model.cfg.cls_pretrained:
        optional |= {"cls_token", "cls_pos"}
    return set(model.state_dict()) - optional


def trainable_names(model: nn.Module, method: str) -> set[str]:
    """Parameter names that train under `method`."""
    params = {n for n, _ in model.named_parameters()}
    if method == "full":
        return params
    head = head_names(model) & params
    if method == "linear":
        return head
    return (peft_names(model) | tuned_backbone_names(model) | head) & params


def apply_method(model: nn.Module, method: str) -> None:
    """Set `requires_grad` of every parameter for `method`."""
    names = trainable_names(model, method)
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)


def trainable_keys(model: nn.Module) -> list[str]:
    """State-dict keys of trainable parameters and of persistent buffers of training modules."""
    keys = {n for n, p in model.named_parameters() if p.requires_grad}
    for mname, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            keys |= {_prefixed(mname, b) for b, _ in module.named_buffers(recurse=False)}
    return [k for k in model.state_dict() if k in keys]


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies-by-reference of the trainable state, in state-dict order."""
    state = model.state_dict()
    return {k: state[k] for k in trainable_keys(model)}


def load_trainable_state_dict(model: nn.Module, state: dict[str, Tensor], strict: bool) -> None:
    """Load trainable tensors; exact key set when `strict`, shapes always checked."""
    expected = trainable_keys(model)
    current = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if strict and (missing or unexpected):
        first = (missing or unexpected)[0]
        raise LayoutMismatchError(
            f"trainable state does not fit this model: {len(missing)} missing, "
            f"{len(unexpected)} unexpected (first: {first})",
            hint="load it onto the same backbone, task classes, method and PEFT config",
        )
    bad = [k for k in expected if k in state and state[k].shape != current[k].shape]
    if bad:
        raise LayoutMismatchError(
            f"trainable tensor {bad[0]} has shape {list(state[bad[0]].shape)}, "
            f"the model expects {list(current[bad[0]].shape)}",
            hint="load it onto the same backbone, task classes and PEFT config",
        )
    model.load_state_dict({k: state[k] for k in expected if k in state}, strict=False)


_GROUP_OF_BLOCK_PART = ("prompt_embeddings", "cp_adapter", "adapter", "adapter1", "out_transform")
_TOP_GROUPS = {
    "encoder": "patch_encoder",
    "reduce_dim": "reduce_dim",
    "pos_embed": "pos_embed",
    "cls_token": "cls_token+cls_pos",
    "cls_pos": "cls_token+cls_pos",
    "norm": "final_norm",
    "prompt_cor": "prompt_cor",
    "cls_head_finetune": "head",
}


def group_of(name: str, tuned: set[str]) -> str:
    """Reporting group of a parameter name (for inspect tables only, not for trainability)."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 1 and parts[1] in ("attn1", "norm3"):
        return parts[1]
    if parts[0] == "blocks" and len(parts) > 3:
        if parts[3] in _GROUP_OF_BLOCK_PART:
            return parts[3]
        return "backbone_biases" if name in tuned else "blocks"
    return _TOP_GROUPS.get(parts[0], parts[0])


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model.

    Attributes:
        total / trainable / trainable_without_head: numbers of scalars.
        groups: all parameters per reporting group.
        trainable_groups: trainable parameters per reporting group (zero groups omitted).
    """

    total: int
    trainable: int
    trainable_without_head: int
    groups: dict[str, int] = field(default_factory=dict)
    trainable_groups: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON keys as cli.md names them."""
        return {
            "total_params": self.total,
            "trainable_params": self.trainable,
            "trainable_params_without_head": self.trainable_without_head,
            "groups": self.groups,
            "trainable_groups": self.trainable_groups,
        }


def count_parameters(model: nn.Module) -> ParamCounts:
    """Total / trainable parameter counts, with and without the head, per group."""
    tuned = tuned_backbone_names(model)
    head = head_names(model)
    groups: dict[str, int] = {}
    train_groups: dict[str, int] = {}
    total = trainable = head_trainable = 0
    for name, param in model.named_parameters():
        n = param.numel()
        g = group_of(name, tuned)
        groups[g] = groups.get(g, 0) + n
        total += n
        if param.requires_grad:
            trainable += n
            train_groups[g] = train_groups.get(g, 0) + n
            head_trainable += n if name in head else 0
    return ParamCounts(total, trainable, trainable - head_trainable, groups, train_groups)


def peft_line(trainable: int, total: int) -> str:
    """The huggingface/peft summary line."""
    pct = 100 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with the upstream no-decay rule (1-D, `.bias`, names containing `token`)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in _trainable(model.named_parameters()):
        skip = param.dim() == 1 or name.endswith(".bias") or "token" in name
        (no_decay if skip else decay).append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def _trainable(named: Iterable[tuple[str, nn.Parameter]]) -> Iterable[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in named if p.requires_grad)
