"""The plugin contract: what a plugin, a command or a user may rely on, and nothing that runs a model.

Hook specifications (``hookspecs``), the protocol of each plugin kind (``protocols``), the ``Plugin`` base with
typed ``Params`` (``plugin``), errors (``errors``), the registry that resolves names (``registry``), the config
models where every default lives (``config``), evaluator results and statistics (``results``) and the metrics
summary (``summary``). Imports nothing else of fairprune; every other room and every plugin may import it.
"""
