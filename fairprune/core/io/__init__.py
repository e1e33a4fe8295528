"""Files and models on disk: the atomic, locked output directory (``outputs``), saving and loading pruned models
(``persist``) and model sources (``sources``). Imports the rooms below it (``method`` for surgery on load);
plugins may import it for loading and saving.
"""
