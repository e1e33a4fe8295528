"""Built-in evaluators: activation and output bias, the report's activation pictures, capability, lm_eval,
generations, parameters.

The evaluator classes import only pydantic at module level; torch, transformers
and lm_eval are imported when an evaluator runs, so listing plugins stays fast.
"""

from __future__ import annotations

from ...core.hookspecs import hookimpl


@hookimpl
def fairprune_register_evaluators(register):
    from .activation_bias import ActivationBiasEvaluator
    from .activation_pictures import ActivationPicturesEvaluator
    from .capability import CapabilityEvaluator
    from .generations import GenerationsEvaluator
    from .lm_eval_harness import LmEvalEvaluator
    from .output_bias import OutputBiasEvaluator
    from .parameters import ParametersEvaluator

    for evaluator in (ActivationBiasEvaluator, ActivationPicturesEvaluator, OutputBiasEvaluator, CapabilityEvaluator,
                      LmEvalEvaluator, GenerationsEvaluator, ParametersEvaluator):
        register(evaluator())
