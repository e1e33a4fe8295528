"""Analysis prompts in many registers: the bundled race_registers axis."""

from __future__ import annotations

from fairprune.core.contract.registry import get_registry
from fairprune.core.data.groups import gather


def test_race_registers_axis_has_the_race_groups_in_eight_registers() -> None:
    registry = get_registry()
    axis = registry.create("bias_axes", "race_registers")
    race = registry.create("bias_axes", "race")
    assert axis.attribute_groups() == race.attribute_groups()
    analysis = gather(axes=["race_registers"], split="analysis", registry=registry).groups
    families = {g.template_id.split("/")[0] for g in analysis}
    assert len(families) == 8
    heldout = gather(axes=["race_registers"], split="heldout", registry=registry).groups
    assert heldout and not {g.template_id for g in heldout} & {g.template_id for g in analysis}
