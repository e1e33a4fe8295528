"""The contract and the machinery of fairprune; imports nothing outside ``fairprune.core`` (see DESIGN)."""
