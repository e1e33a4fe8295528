"""``fairprune serve``: a local, interactive explorer of a base model and its pruned version (the ``serve`` extra).

``Explorer`` (in ``explorer``) holds the models and computes; ``build_app`` (in
``app``) lays out the Gradio page around it. Gradio is imported only by ``app``.
"""

from __future__ import annotations

from .explorer import Comparison, Explorer, Limits, template_choices

__all__ = ["Comparison", "Explorer", "Limits", "template_choices"]
