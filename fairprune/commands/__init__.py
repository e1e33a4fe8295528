"""Subcommands of the ``fairprune`` CLI, one module each."""
