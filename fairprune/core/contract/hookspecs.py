"""The whole plugin contract: pluggy hook specifications of the ``fairprune`` project.

Registration hooks receive a ``register`` callable and call it once per object
they contribute. Lifecycle hooks let integrations (experiment trackers, loggers)
observe a run. Hooks are only ever extended with new arguments, never narrowed.
"""

from __future__ import annotations

import pluggy

PROJECT = "fairprune"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def fairprune_register_architectures(register):
    """Register architecture adapters: ``register(adapter)``; see ``protocols.ArchitectureAdapter``."""


@hookspec
def fairprune_register_importance_metrics(register):
    """Register neuron importance metrics: ``register(metric)``; see ``protocols.ImportanceMetric``."""


@hookspec
def fairprune_register_bias_metrics(register):
    """Register per-neuron bias metrics: ``register(metric)``; see ``protocols.BiasMetric``."""


@hookspec
def fairprune_register_bias_axes(register):
    """Register bias axes (attribute groups x templates): ``register(axis)``; see ``protocols.BiasAxis``."""


@hookspec
def fairprune_register_collectors(register):
    """Register activation sites and token poolings: ``register(site_or_pooling)``.

    An object whose ``collector_kind`` is ``"site"`` says where activations are
    read (see ``protocols.Site``); ``"pooling"`` says which token positions are
    averaged (see ``protocols.Pooling``).
    """


@hookspec
def fairprune_register_scorers(register):
    """Register scorers that blend bias and importance: ``register(scorer)``; see ``protocols.Scorer``."""


@hookspec
def fairprune_register_pruners(register):
    """Register pruners that apply a plan to a model: ``register(pruner)``; see ``protocols.Pruner``."""


@hookspec
def fairprune_register_model_sources(register):
    """Register model sources (names, paths, formats): ``register(source)``; see ``protocols.ModelSource``."""


@hookspec
def fairprune_register_evaluators(register):
    """Register evaluators comparing base and pruned model: ``register(evaluator)``; see ``protocols.Evaluator``."""


@hookspec
def fairprune_register_bias_objectives(register):
    """Register output-level bias objectives for attribution: ``register(objective)``; see
    ``protocols.BiasObjective``."""


@hookspec
def fairprune_register_methods(register):
    """Register selection methods (how neurons get chosen: model, analysis prompts, budget -> ``Plan``):
    ``register(method)``; see ``protocols.Method``. A config names one as ``method: {name: ..., <params>}``."""


@hookspec
def fairprune_run_started(config, output_dir):
    """Called once when ``fairprune run`` starts, with the validated ``RunConfig`` and the output path."""


@hookspec
def fairprune_layer_pruned(layer, removed, width_before, width_after):
    """Called after each layer is pruned: layer index, removed neuron indices, widths."""


@hookspec
def fairprune_run_finished(config, output_dir, metrics):
    """Called once when a run has saved its outputs, with the metrics dictionary."""


@hookspec
def fairprune_write_run_files(run, directory):
    """Write human-readable files of a finished run into ``directory`` (the staging directory, renamed into
    place only when every writer succeeded). ``run`` is ``core.pipeline.Run`` (``config``, ``metrics``,
    ``evaluations``, ``plan``, ``bias_report``, ``base_model_id``, ``license``); the built-in report plugin
    writes ``report.md``, the model card ``README.md`` and ``report.html``. Return True when files were written.
    """
