"""``python -m fairprune`` and ``torchrun --nproc_per_node=N -m fairprune analyze|run ...``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
