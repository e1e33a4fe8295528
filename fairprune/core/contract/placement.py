"""Names of model placements (``model.device_map``), kept apart so that the command line reads them without
importing the config models."""

from __future__ import annotations

import re

#: the strategies accelerate spreads a model with (``model.device_map`` as a string)
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")

#: a single device, the whole model on it (``model.device_map: cuda:0``), as transformers' ``from_pretrained`` takes
DEVICE = re.compile(r"(cpu|cuda|mps|xpu|npu|hpu)(:\d+)?")


def is_device(value: str) -> bool:
    """Whether ``value`` names one device (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...)."""
    return DEVICE.fullmatch(value) is not None
