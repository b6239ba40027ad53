"""Whether bf16 autocast computes a network's convolutions right on this CPU, checked layer by layer
against fp32: their outputs before the predictor uses a bf16 path, and their gradients too before a
CPU run trains in bf16. Where one is wrong, fp32 is taken instead.

oneDNN picks its bf16 kernels per shape and per instruction set, and one of them is wrong. On a 2-core
AMD EPYC with AVX512-BF16 (PyTorch 2.13.0), the weight gradient of a 3 × 3 × 3 convolution (padding 1,
16 channels or more) whose input is 2 voxels deep comes out as garbage on every call: relative error
about 1, values up to 1e37. Its output and its input gradient are right, other depths are right, fp32
is right, and with oneDNN switched off bf16 is right too. The tests' 4-filter cascade (8-slice patches,
so its deepest level is 2 deep) trained on such gradients, and one step in ten overflowed to a
non-finite norm (docs/training.md). Rather than a rule for that one shape, every convolution of the
network is run once, at the input shape and memory layout it is given, in bf16 and in fp32: a CPU or
library with another faulty kernel is caught the same way. Training checks the exact shapes it runs;
inference, whose crops vary per case, checks a typical one (a forward bf16 bug of the same kind,
PyTorch issue 163347, gave a 2 × 2 convolution a quarter of its sum on an AMD CPU). Nothing here is in
PyTorch or MONAI, hence by hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from model.compute import ComputePath, choose_path

TOLERANCE = 0.05  # relative error; right bf16 kernels: 0.003–0.007 (operands rounded to 8 bits); the faulty one ≈ 1


@dataclass(frozen=True)
class FaultyConvolution:
    name: str  # the module's name in the network
    input_shape: tuple[int, ...]
    error: float  # largest relative error of its output (or weight or input gradient), bf16 against fp32

    def __str__(self) -> str:
        return f"{self.name} (input {'×'.join(map(str, self.input_shape))}: error {self.error:.2g})"


Inputs = tuple[tuple[int, ...], torch.memory_format]  # a convolution's input: shape and memory layout
_ERRORS: dict[tuple, float] = {}  # bf16_error by convolution, weight layout, input and gradients, once per process


def _convolution_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[_ConvNd, Inputs]]:
    """Each convolution of ``model`` with the shape and layout of the input it gets from ``example`` (one
    forward pass of a copy, so no batch-norm statistics of the model move)."""
    seen: dict[str, tuple[_ConvNd, Inputs]] = {}

    def keep(name: str, module: _ConvNd, args: tuple) -> None:  # a hook returning a value replaces the output
        seen.setdefault(name, (module, (tuple(args[0].shape), _layout(args[0]))))

    probe = copy.deepcopy(model)
    for name, module in probe.named_modules():
        if isinstance(module, _ConvNd):
            module.register_forward_hook(lambda m, args, out, name=name: keep(name, m, args))
    with torch.no_grad():
        probe(example)
    return seen


def _computed(conv: _ConvNd, x: torch.Tensor, grad_out: torch.Tensor | None, bf16: bool) -> list[torch.Tensor]:
    """``conv``'s output and, given ``grad_out``, its weight and input gradients, under bf16 autocast or in fp32."""
    conv = copy.deepcopy(conv).requires_grad_(grad_out is not None)
    x = x.detach().clone().requires_grad_(grad_out is not None)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(grad_out is not None):
        out = conv(x)
    if grad_out is None:
        return [out.float()]
    out.backward(grad_out.to(out.dtype))
    return [out.detach().float(), conv.weight.grad.float(), x.grad.float()]


def bf16_error(conv: _ConvNd, inputs: Inputs, gradients: bool = True, seed: int = 0) -> float:
    """The largest relative error (max |difference| / max |fp32|) of ``conv``'s output and (``gradients``)
    its weight and input gradients under bf16 autocast against fp32, for random operands of the input's
    shape and layout (NaN counts as infinite)."""
    generator = torch.Generator().manual_seed(seed)
    shape, layout = inputs
    operand = torch.randn(shape, generator=generator).contiguous(memory_format=layout)
    grad_out = None
    if gradients:
        with torch.no_grad():
            grad_out = torch.randn(conv(operand).shape, generator=generator)
    errors = []
    for low, full in zip(_computed(conv, operand, grad_out, True), _computed(conv, operand, grad_out, False),
                         strict=True):
        difference = float((low - full).abs().max())
        errors.append(difference / max(float(full.abs().max()), 1e-30))
    worst = max(errors)
    return worst if worst == worst else float("inf")


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory layout ``x`` is in (channels-last kernels are other kernels)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def faulty_bf16_convolutions(model: nn.Module, example: torch.Tensor,
                             gradients: bool = True) -> list[FaultyConvolution]:
    """The convolutions of ``model`` whose bf16 output or (``gradients``) gradients disagree with fp32
    beyond ``TOLERANCE`` at the inputs ``example`` (a batch of the shape and memory layout the network
    will get) gives them. Each distinct convolution, weight layout and input is run once per process
    (:data:`_ERRORS`): a kernel is chosen by those, not by the weights' values, and export builds a
    predictor per case and margin."""
    faulty = []
    for name, (conv, inputs) in _convolution_inputs(model, example).items():
        key = (repr(conv), _layout(conv.weight), inputs, gradients)
        if key not in _ERRORS:
            _ERRORS[key] = bf16_error(conv, inputs, gradients)
        if not _ERRORS[key] <= TOLERANCE:
            faulty.append(FaultyConvolution(name, inputs[0], _ERRORS[key]))
    return faulty


def checked_path(path: ComputePath, model: nn.Module, example: torch.Tensor) -> ComputePath:
    """``path``, or the CPU's fp32 path where ``path`` is bf16 on the CPU and bf16 gets an output of one
    of ``model``'s convolutions wrong at the inputs ``example`` gives them (the reason says which)."""
    if path.device != "cpu" or path.precision != "bf16":
        return path
    faulty = faulty_bf16_convolutions(model, example, gradients=False)
    if not faulty:
        return path
    fp32 = choose_path(torch.device("cpu"), "fp32")
    return replace(fp32, reason=f"fp32: bf16 is wrong on this CPU for {len(faulty)} convolution(s), e.g. "
                                f"{faulty[0]}; {fp32.reason.partition('; ')[2]}")
