"""The model families, one entry each: the one place that tells ``segresnet2d`` from ``cascade3d``.

An entry says which network settings the family's manifest holds (and so how its network is built),
which inference settings, which input modes it takes, and how the predictor runs it: slice by slice
on per-slice head crops (2D), or sliding windows over the head's box (3D). Training adds its own half
(loss, dataset, optimiser defaults) in :mod:`training.families`, keyed by the same names. Everything
else asks the entry, never the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from model.networks import Cascade3DNetwork, SegResNet2DNetwork
from model.settings import Inference, PatchInference, parse
from model.windowing import CHANNELS


@dataclass(frozen=True)
class Family:
    name: str
    network: type[SegResNet2DNetwork] | type[Cascade3DNetwork]  # its manifest ``network`` (defaults inside)
    inference: type[Inference]  # its manifest ``inference``
    slice_wise: bool  # True: the networks see one slice (and its neighbours) at a time
    input_modes: tuple[str, ...]

    def parse_network(self, data: Mapping[str, Any] | None) -> SegResNet2DNetwork | Cascade3DNetwork:
        return parse(self.network, data, "network")

    def parse_inference(self, data: Mapping[str, Any] | None) -> Inference:
        return parse(self.inference, data, "inference")

    def default_network(self) -> dict[str, Any]:
        """The family's default network settings as JSON (a training run's starting point)."""
        return asdict(self.network())


SEGRESNET2D = Family("segresnet2d", SegResNet2DNetwork, Inference, slice_wise=True, input_modes=tuple(CHANNELS))
CASCADE3D = Family("cascade3d", Cascade3DNetwork, PatchInference, slice_wise=False, input_modes=("windows3",))
FAMILIES: dict[str, Family] = {f.name: f for f in (SEGRESNET2D, CASCADE3D)}


def family(name: str) -> Family:
    """The registry entry of ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def build_network(name: str, in_channels: int, network: Mapping[str, Any] | None = None) -> nn.Module:
    """The network of family ``name`` from its JSON settings (defaults for what is not given)."""
    return family(name).parse_network(network).build(in_channels)
