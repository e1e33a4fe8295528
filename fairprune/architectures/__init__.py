"""Architecture adapters: how to find and cut the GLU MLPs of a model family."""
