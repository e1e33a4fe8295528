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
#: a seeded sample of the cloze check's passages (336 bundled): its guard's backward pass and every round's
#: check run over long passages and were most of the guarded selection's time
CLOZE_TRIM = {"limit": 48}
#: and of those, what its measured check reads when the shipped config samples the check (it must stay below limit)
CLOZE_CHECK_TRIM = {"check_limit": 16}


def _cloze_trim(cloze: dict[str, Any]) -> dict[str, int]:
    """The keys set on a cloze check that samples no passages yet."""
    return {**CLOZE_TRIM, **(CLOZE_CHECK_TRIM if cloze.get("check_limit") is not None else {})}


def shipped_demo() -> dict[str, Any]:
    """The shipped demo config, validated and dumped as JSON-ready data."""
    from fairprune.commands.demo import DEMO_CONFIG
    from fairprune.core.contract.config import load_config

    return load_config(DEMO_CONFIG).model_dump(mode="json")


def trimmed(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``CAPABILITY_TRIM`` where its method estimates a ``capability_cost``, ``CLOZE_TRIM`` on a
    cloze check that samples no passages yet and ``RECALL_TRIM`` on an ``attribute_recall`` evaluator that
    samples no prompts yet; everything else as it is."""
    config = copy.deepcopy(config)
    capability = (config["method"].get("params") or {}).get("capability")
    if isinstance(capability, dict) and capability.get("name") == "capability_cost":
        capability.setdefault("params", {}).update(CAPABILITY_TRIM)
    cloze = (config["method"].get("params") or {}).get("cloze_check")
    if isinstance(cloze, dict) and cloze.get("limit") is None:
        cloze.update(_cloze_trim(cloze))
    for evaluator in config["evaluation"]["evaluators"]:
        if evaluator["name"] == "attribute_recall" and evaluator["params"].get("limit") is None:
            evaluator["params"].update(RECALL_TRIM)
    return config


def demo_overrides(output_dir: Path, *extra: str) -> list[str]:
    """``--set`` overrides that run ``trimmed(shipped_demo())`` into ``output_dir``, then ``extra``."""
    shipped = shipped_demo()
    short = trimmed(shipped)
    sets = [f"output.dir={output_dir}"]
    params, shipped_params = short["method"]["params"], shipped["method"]["params"]
    if params.get("capability") != shipped_params.get("capability"):
        sets += [f"method.params.capability.params.{k}={v}" for k, v in CAPABILITY_TRIM.items()]
    if params.get("cloze_check") != shipped_params.get("cloze_check"):
        cloze = shipped_params["cloze_check"]
        sets += [f"method.params.cloze_check.{k}={v}" for k, v in _cloze_trim(cloze).items()]
    if short["evaluation"] != shipped["evaluation"]:
        sets.append(f"evaluation.evaluators={json.dumps(short['evaluation']['evaluators'])}")
    return [*sets, *extra]
