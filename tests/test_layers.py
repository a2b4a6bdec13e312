"""The speed-motivated layers compute what their plain torch counterparts compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from voxtrain.model.layers import Dropout, MaskedConv1d, conv1d_time_major, same_padding


@pytest.mark.parametrize("kernel", [1, 3, 4, 9])
def test_time_major_conv_equals_conv1d(kernel: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 17, 8, requires_grad=True)
    w = torch.randn(5, 8, kernel, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    pad = same_padding(kernel)
    got = conv1d_time_major(x, w, b, pad)
    want = F.conv1d(F.pad(x.transpose(1, 2), pad), w, b).transpose(1, 2)
    assert got.shape == (3, 17, 5) and got.is_contiguous()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (x, w, b), g)
    want_grads = torch.autograd.grad(want, (x, w, b), g)
    for a, e in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


def test_masked_conv_zeroes_padded_outputs_and_keeps_checkpoint_layout() -> None:
    conv = MaskedConv1d(4, 6, 3)
    assert conv.state_dict()["conv.weight"].shape == (6, 4, 3)
    x = torch.randn(2, 7, 4)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    x[1, 4:] = 0
    y = conv(x, mask)
    assert torch.all(y[1, 4:] == 0) and torch.all(y[0] != 0)
    # The short item alone gives the same numbers as inside the padded batch.
    torch.testing.assert_close(conv(x[1:, :4], mask[1:, :4])[0], y[1, :4])


def test_dropout_rate_scale_gradient_and_seed() -> None:
    drop = Dropout(0.1).train()
    x = torch.ones(400_000, requires_grad=True)
    torch.manual_seed(7)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 65536 / (65536 - 6554)))
    assert abs(y.mean().item() - 1.0) < 0.005  # expectation preserved
    (g,) = torch.autograd.grad(y, x, torch.full_like(y, 2.0))
    assert torch.equal(g == 0, y == 0)  # the backward uses the forward's mask
    torch.manual_seed(7)
    assert torch.equal(drop(x), y)  # the global seed (saved in checkpoints) fixes it
    assert not torch.equal(drop(x), y)
    assert torch.equal(drop.eval()(x), x)


def test_dropout_odd_sizes_and_bf16() -> None:
    drop = Dropout(0.5).train()
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)  # 105 elements: not a multiple of 4
    y = drop(x)
    assert y.shape == x.shape and y.dtype == torch.bfloat16
    assert torch.all((y == 0) | (y == x * 2))


def test_cpu_attention_matches_the_fused_kernel() -> None:
    """The CPU path (probabilities kept for the backward) computes SDPA's numbers and grads."""
    from voxtrain.model.layers import MultiHeadSelfAttention

    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(32, 4, dropout=0.0).train()
    x = torch.randn(3, 11, 32, requires_grad=True)
    mask = torch.arange(11)[None] < torch.tensor([11, 7, 1])[:, None]
    y = attn(x, mask)
    (gx, *gw) = torch.autograd.grad(y.square().sum(), [x, *attn.parameters()])

    def reference(x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = attn.qkv(x).view(b, t, 3, 4, h // 4).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return attn.out(out.transpose(1, 2).reshape(b, t, h))

    want = reference(x)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), want, atol=1e-5, rtol=1e-5)
    (rx, *rw) = torch.autograd.grad(want.square().sum(), [x, *attn.parameters()])
    for got, expected in zip([gx, *gw], [rx, *rw], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # Keys past an item's length get exactly zero weight: changing them changes nothing real.
    x2 = x.detach().clone()
    x2[1, 7:] += 5.0
    torch.testing.assert_close(attn(x2, mask)[1, :7], y[1, :7], atol=1e-5, rtol=1e-5)
