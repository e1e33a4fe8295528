"""The shipped demo config on the real SmolLM2, shortened only by data-size keys, for the tests that run it.

The recipe of ``fairprune/data/configs/fair-smollm2.yaml`` changes as it is tuned; the overrides here
follow whatever method it names, so the tests keep running the shipped recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the capability cost's text, shortened for time (token counts; the shipped values are larger)
CAPABILITY_TRIM = {"max_tokens": 1024, "check_tokens": 256}


def shipped_demo() -> dict[str, Any]:
    """The shipped demo config, validated and dumped as JSON-ready data."""
    from fairprune.commands.demo import DEMO_CONFIG
    from fairprune.core.contract.config import load_config

    return load_config(DEMO_CONFIG).model_dump(mode="json")


def capability_trim(config: dict[str, Any]) -> dict[str, int]:
    """``CAPABILITY_TRIM`` where the config's method estimates a ``capability_cost`` (its params take those
    keys); empty for a method without one, which has no such text to shorten."""
    capability = (config["method"].get("params") or {}).get("capability")
    if isinstance(capability, dict) and capability.get("name") == "capability_cost":
        return dict(CAPABILITY_TRIM)
    return {}


def demo_overrides(output_dir: Path, *extra: str) -> list[str]:
    """``--set`` overrides for a run of the shipped demo into ``output_dir``: the capability text trimmed
    (``capability_trim``), then ``extra``."""
    trims = capability_trim(shipped_demo())
    return [f"output.dir={output_dir}", *(f"method.params.capability.params.{k}={v}" for k, v in trims.items()),
            *extra]
