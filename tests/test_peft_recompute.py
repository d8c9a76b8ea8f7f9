"""Point-PEFT's recomputed geometry-adapter segments: same numbers, fewer saved activations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pointpeft_cli.peft.adapter as adapter
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.peft.config import PointPeftConfig

TINY = {
    "trans_dim": 32, "depth": 2, "num_heads": 2, "encoder_dims": 32, "encoder_widths": (16, 32, 64),
    "pos_hidden": 16, "head_hidden": 16, "pretrain_num_group": 8, "pretrain_group_size": 8,
}  # fmt: skip


def _step(
    recompute: bool, monkeypatch: pytest.MonkeyPatch, prompt_layers: int = 1
) -> tuple[torch.Tensor, dict, dict]:
    monkeypatch.setattr(adapter.geometry_update, "__defaults__", (recompute, None))
    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, num_group=16, group_size=8, drop_path_rate=0.3,
        peft=PointPeftConfig(local_group_size=4, prompt_layers=prompt_layers), **TINY,
    ).train()  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(30, 32), dim=1))
    pts = torch.randn(4, 200, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)  # dropout, DropPath
    logits = model(pts)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in model.named_buffers() if "out_transform" in n}
    return logits.detach(), grads, buffers


@pytest.mark.parametrize("prompt_layers", [1, 2])  # next block unprompted / prompted
def test_recompute_is_bit_identical(monkeypatch: pytest.MonkeyPatch, prompt_layers: int) -> None:
    # recomputed in backward: the geometry segments and the next block's entry (position,
    # prompts, norm1); the block output those segments start from is rebuilt from a recipe
    logits, grads, buffers = _step(True, monkeypatch, prompt_layers)
    ref_logits, ref_grads, ref_buffers = _step(False, monkeypatch, prompt_layers)
    assert torch.equal(logits, ref_logits)
    assert grads.keys() == ref_grads.keys()
    assert all(g is not None for g in grads.values())
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name
    # out_transform's BatchNorm ran once per forward (not again in the recomputation)
    for name, buf in buffers.items():
        assert torch.equal(buf, ref_buffers[name]), name
        if name.endswith("num_batches_tracked"):
            assert int(buf) == 1


def _count_nested_hooks(monkeypatch: pytest.MonkeyPatch, count) -> None:  # type: ignore[no-untyped-def]
    """Let `count` also see what hooks installed inside the code under test keep as tensors
    (only the innermost saved-tensor hooks run, so an outer counter would miss them)."""
    real = torch.autograd.graph.saved_tensors_hooks

    def nested(pack, unpack):  # type: ignore[no-untyped-def]
        def counted(t: torch.Tensor):  # type: ignore[no-untyped-def]
            kept = pack(t)
            if isinstance(kept, torch.Tensor):
                count(kept)
            return kept

        return real(counted, unpack)

    monkeypatch.setattr(torch.autograd.graph, "saved_tensors_hooks", nested)


def _saved_bytes(recompute: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    """Bytes that one block's geometry adapter keeps for backward (x itself excluded)."""
    from pointpeft_cli.peft.context import build_context

    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, num_group=32, group_size=8,
        peft=PointPeftConfig(local_group_size=8), **TINY,
    ).train()  # fmt: skip
    local = (model.blocks.norm3, model.blocks.attn1)
    center = torch.rand(8, 32, 3)
    prompts = torch.randn(8, 10, 32)
    ctx = build_context(model.peft_config, center, model.prompt_cor.detach(), prompts, None, local)
    x = torch.randn(8, 33, 32, requires_grad=True)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks
    _count_nested_hooks(monkeypatch, pack)
    with hooks(pack, lambda t: t):
        adapter.geometry_update(
            model.blocks.blocks[0], x, 0, ctx.plain, local, (0.3, 0.3), recompute=recompute
        )
    storages.pop(x.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def test_recompute_saves_fewer_activations(monkeypatch: pytest.MonkeyPatch) -> None:
    # the PyTorch path (CUDA, or POINTPEFT_KERNELS=torch). Recomputed: norm3's output, the
    # local attention's gathered q/k/v, the propagation segment (normalised pooled groups, GELU
    # input, centre rows, adapter1 input), and the pooling's low-rank left factor (rebuilt from
    # the attention output). At width 32 that is 0.25x the bytes (0.38x with the left factor
    # kept, 0.76x before the q/k/v and the normalised copy were dropped).
    monkeypatch.setenv("POINTPEFT_KERNELS", "torch")
    assert _saved_bytes(True, monkeypatch) < 0.3 * _saved_bytes(False, monkeypatch)


def test_compiled_path_recomputes_the_same_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CPU kernels keep the row-wise qkv (54 wide here, wider than the model's 32; 0.14x
    # the width at paper size) and the pooling's left factor, and nothing per member else;
    # the recomputed segments are the same as on the PyTorch path
    pytest.importorskip("numba")
    monkeypatch.delenv("POINTPEFT_KERNELS", raising=False)
    assert _saved_bytes(True, monkeypatch) < 0.55 * _saved_bytes(False, monkeypatch)


def test_blocks_keep_neither_their_output_nor_the_next_input(monkeypatch: pytest.MonkeyPatch):
    """The tensor each block hands to its geometry adapter and every later block's input
    (what norm1 would keep) are rebuilt in backward; only block 0's input is kept."""
    from pointpeft_cli.models.transformer import Block
    from pointpeft_cli.peft.context import PointContext

    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, num_group=16, group_size=8,
        peft=PointPeftConfig(local_group_size=4, prompt_layers=1), **{**TINY, "depth": 3},
    ).train()  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(30, 32), dim=1))
    outputs: list[torch.Tensor] = []  # held, so that no later tensor reuses their memory
    inputs: list[torch.Tensor] = []
    saved: set[int] = set()
    real_geometry, real_enter = PointContext.geometry, Block.enter

    def geometry(self, block, x, num_prompt, follow):  # type: ignore[no-untyped-def]
        outputs.append(x)
        return real_geometry(self, block, x, num_prompt, follow)

    def enter(self, x, ctx):  # type: ignore[no-untyped-def]
        entry = real_enter(self, x, ctx)
        inputs.append(entry.x)
        return entry

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.add(t.untyped_storage().data_ptr())
        return t

    monkeypatch.setattr(PointContext, "geometry", geometry)
    monkeypatch.setattr(Block, "enter", enter)
    _count_nested_hooks(monkeypatch, pack)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(torch.randn(4, 200, 3, generator=torch.Generator().manual_seed(1)))
    assert len(outputs) == 3 and len(inputs) == 3
    address = [t.untyped_storage().data_ptr() for t in [*inputs, *outputs]]
    assert address[0] in saved  # block 0's entry runs outside any recomputed segment
    assert not saved & set(address[1:])
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_regathered_attention_keeps_no_gathered_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 40, (8 * 5,), generator=gen)
    grad = torch.randn(8, 2, 5, 3, generator=gen)

    def attend(regather: bool) -> tuple[torch.Tensor, torch.Tensor, set[int]]:
        torch.manual_seed(0)
        source = torch.randn(40, 18, generator=torch.Generator().manual_seed(1))
        source.requires_grad_(True)
        kept: set[int] = set()

        def count(t: torch.Tensor) -> torch.Tensor:
            kept.add(t.untyped_storage().data_ptr())
            return t

        gathered = source.index_select(0, idx)
        hooks = torch.autograd.graph.saved_tensors_hooks
        with monkeypatch.context() as m, hooks(count, lambda t: t):
            _count_nested_hooks(m, count)
            with adapter._regathered(gathered, source, idx, enabled=regather):
                q, k, v = gathered.view(8, 5, 3, 2, 3).permute(2, 0, 3, 1, 4).unbind(0)
                out = F.scaled_dot_product_attention(q, k, v)
        out.backward(grad)
        assert source.grad is not None
        return out.detach(), source.grad, kept - {source.untyped_storage().data_ptr()}

    out, d_source, kept = attend(True)
    ref_out, ref_d_source, ref_kept = attend(False)
    assert torch.equal(out, ref_out) and torch.equal(d_source, ref_d_source)
    assert len(kept) == len(ref_kept) - 1  # the gathered copy is the one storage not kept


@pytest.mark.parametrize("method", ["point-peft", "full"])
def test_recompute_mlp_same_numbers_less_memory(method: str, monkeypatch: pytest.MonkeyPatch):
    def step(recompute: bool) -> tuple[torch.Tensor, dict, int]:
        torch.manual_seed(0)
        model = create_model(
            "point-mae", num_classes=6, method=method, num_group=16, group_size=8,
            peft=PointPeftConfig(local_group_size=4), drop_path_rate=0.3, **TINY,
        ).train()  # fmt: skip
        model.set_recompute_mlp(recompute)
        if method == "point-peft":
            model.set_memory_bank(F.normalize(torch.randn(30, 32), dim=1))
        pts = torch.randn(4, 200, 3, generator=torch.Generator().manual_seed(1))
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        torch.manual_seed(5)
        hooks = torch.autograd.graph.saved_tensors_hooks
        with monkeypatch.context() as m, hooks(pack, lambda t: t):
            _count_nested_hooks(m, pack)
            logits = model(pts)
        F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        return logits.detach(), grads, sum(b for k, b in saved.items() if k not in params)

    logits, grads, kept = step(True)
    ref_logits, ref_grads, ref_kept = step(False)
    assert torch.equal(logits, ref_logits)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name
    # per row of each block (4 samples x (cls + 16 tokens), plus 10 prompts in Point-PEFT's
    # prompted first block) no longer kept: the GELU input (4 x 32 float32), norm2's mean and
    # rstd, and, when fc1's weight trains (full), fc1's input (32 float32)
    rows = sum([4 * (17 + (10 if method == "point-peft" else 0)), 4 * 17])
    per_row = 4 * 32 * 4 + 2 * 4 + (32 * 4 if method == "full" else 0)
    assert ref_kept - kept == rows * per_row
