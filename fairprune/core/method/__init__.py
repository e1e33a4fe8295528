"""The machinery methods choose neurons with: activation collection (``collect``), the bias analysis (``bias``),
attribution passes (``attribution``), planning and budgets (``planning``, ``plan_files``), signed selection in
rounds (``selection``), and surgery with its all-or-nothing snapshot (``surgery``, ``snapshot``). Method plugins
(``fairprune.plugins.methods``) are built from these; imports ``contract``, ``data`` and ``model``.
"""
