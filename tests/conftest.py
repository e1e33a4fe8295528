"""Test setup shared by the whole suite: offline, one model cache per machine, tiny-model fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# the real bundled model is dequantized once per machine and reused by every session
os.environ.setdefault("FAIRPRUNE_CACHE", str(Path.home() / ".cache" / "fairprune"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# tiny models are 30x faster on one thread than on two contended ones (intra-op spin-waiting);
# FAIRPRUNE_TEST_THREADS overrides it for machines with cores to spare
torch.set_num_threads(int(os.environ.get("FAIRPRUNE_TEST_THREADS", "1")))

pytest_plugins = ["fairprune.testing.fixtures"]
