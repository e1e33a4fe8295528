"""Running it: the config-driven pipeline and its ``Run`` (``pipeline``), the sweep (``sweep``), checks before any
work (``preflight``) and the evaluator runner (``evaluation``). The top room: the public API and the commands
call it; plugins never import it.
"""
