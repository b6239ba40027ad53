"""The inference copy of a network: batch norms folded, same output, the original untouched."""

from __future__ import annotations

import torch
from monai.networks.nets.segresnet_ds import SegResBlock
from torch import nn

from model.families import build_network
from model.networks import for_inference


def trained_like(model: nn.Module) -> nn.Module:
    """Random batch-norm statistics and affine parameters, as after training (fresh ones are the identity)."""
    torch.manual_seed(0)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.3, 0.3)
    return model


@torch.inference_mode()
def test_folding_the_second_norm_of_each_block_keeps_the_output() -> None:
    model = trained_like(build_network("segresnet2d", 3, {"init_filters": 8, "blocks_down": (1, 2, 2, 4),
                                                          "dsdepth": 3}))
    model.train()  # as during training: the copy must be eval-mode, the original left alone
    blocks = [m for m in model.modules() if isinstance(m, SegResBlock)]
    fused = for_inference(model)
    assert model.training and all(isinstance(b.norm2, nn.BatchNorm2d) for b in blocks)
    assert not fused.training
    assert [type(b.norm2) for b in fused.modules() if isinstance(b, SegResBlock)] == [nn.Identity] * len(blocks)
    x = torch.randn(2, 3, 64, 48)
    expected = model.eval()(x)
    torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-5)
    assert (fused(x) - expected).abs().max() > 0  # other arithmetic, so the test compares two computations


@torch.inference_mode()
def test_networks_without_foldable_norms_are_copied_unchanged() -> None:
    model = build_network("cascade3d", 3, {"init_filters": 4, "pool_kernels": ((1, 2, 2), (2, 2, 2))}).eval()
    copy = for_inference(model)
    assert copy is not model
    x = torch.randn(1, 3, 4, 16, 16)
    torch.testing.assert_close(copy(x), model(x))
