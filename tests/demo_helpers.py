"""The shipped demo config on the real SmolLM2, shortened only by data-size keys, for the tests that run it.

The recipe of ``fairprune/data/configs/fair-smollm2.yaml`` changes as it is tuned; the trims here follow
whatever method and evaluators it names, so the tests keep running the shipped recipe and report.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

#: the capability cost's text, shortened for time (token counts; the shipped values are larger)
CAPABILITY_TRIM = {"max_tokens": 1024, "check_tokens": 256}
#: a seeded sample of attribute-recall prompts per axis instead of all (180 on race): ~78 s less per model
RECALL_TRIM = {"limit": 40}


def shipped_demo() -> dict[str, Any]:
    """The shipped demo config, validated and dumped as JSON-ready data."""
    from fairprune.commands.demo import DEMO_CONFIG
    from fairprune.core.contract.config import load_config

    return load_config(DEMO_CONFIG).model_dump(mode="json")


def trimmed(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``CAPABILITY_TRIM`` where its method estimates a ``capability_cost`` and ``RECALL_TRIM``
    on an ``attribute_recall`` evaluator that samples no prompts yet; everything else as it is."""
    config = copy.deepcopy(config)
    capability = (config["method"].get("params") or {}).get("capability")
    if isinstance(capability, dict) and capability.get("name") == "capability_cost":
        capability.setdefault("params", {}).update(CAPABILITY_TRIM)
    for evaluator in config["evaluation"]["evaluators"]:
        if evaluator["name"] == "attribute_recall" and evaluator["params"].get("limit") is None:
            evaluator["params"].update(RECALL_TRIM)
    return config


def demo_overrides(output_dir: Path, *extra: str) -> list[str]:
    """``--set`` overrides that run ``trimmed(shipped_demo())`` into ``output_dir``, then ``extra``."""
    shipped = shipped_demo()
    short = trimmed(shipped)
    sets = [f"output.dir={output_dir}"]
    if short["method"] != shipped["method"]:
        sets += [f"method.params.capability.params.{k}={v}" for k, v in CAPABILITY_TRIM.items()]
    if short["evaluation"] != shipped["evaluation"]:
        sets.append(f"evaluation.evaluators={json.dumps(short['evaluation']['evaluators'])}")
    return [*sets, *extra]
