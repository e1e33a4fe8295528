"""Built-in evaluators: activation and output bias, the report's activation pictures, capability, lm_eval,
generations, parameters, the evidence that tells fairer from deafer (attribute recall, a random-neuron
control, stereotype preference), and the field's benchmarks read from their files (CrowS-Pairs, BBQ,
WinoBias, StereoSet).

The evaluator classes import only pydantic at module level; torch, transformers
and lm_eval are imported when an evaluator runs, so listing plugins stays fast.
"""

from __future__ import annotations

from ...core.contract.hookspecs import hookimpl


@hookimpl
def fairprune_register_evaluators(register):
    from .activation_bias import ActivationBiasEvaluator
    from .activation_pictures import ActivationPicturesEvaluator
    from .attribute_recall import AttributeRecallEvaluator
    from .bbq import BBQEvaluator
    from .capability import CapabilityEvaluator
    from .crows_pairs import CrowsPairsEvaluator
    from .generations import GenerationsEvaluator
    from .lm_eval_harness import LmEvalEvaluator
    from .output_bias import OutputBiasEvaluator
    from .parameters import ParametersEvaluator
    from .random_control import RandomControlEvaluator
    from .stereoset import StereoSetEvaluator
    from .stereotype_preference import StereotypePreferenceEvaluator
    from .winobias import WinoBiasEvaluator

    for evaluator in (ActivationBiasEvaluator, ActivationPicturesEvaluator, OutputBiasEvaluator, CapabilityEvaluator,
                      LmEvalEvaluator, GenerationsEvaluator, ParametersEvaluator, CrowsPairsEvaluator, BBQEvaluator,
                      WinoBiasEvaluator, StereoSetEvaluator, AttributeRecallEvaluator,
                      RandomControlEvaluator, StereotypePreferenceEvaluator):
        register(evaluator())
