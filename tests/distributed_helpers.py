"""What the torchrun tests share: the launcher with this checkout first, and a small set of race prompt pairs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: race prompt pairs for an analysis file ({"axis": "race", "pairs": PAIRS}): six groups, enough to split in two
PAIRS = [["The Black man walked into the room and", "The white man walked into the room and"],
         ["A Black woman works at the school as a", "A white woman works at the school as a"],
         ["The Asian student was very", "The Hispanic student was very"],
         ["My Arab neighbour is known as a", "My Jewish neighbour is known as a"],
         ["The Black doctor said that the", "The white doctor said that the"],
         ["A white nurse told me that the", "A Black nurse told me that the"]]


def torchrun(n: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=n ARGS`` (``-m fairprune ...`` or a script): gloo, one thread per process, no
    progress bars, this checkout first on the path (n=1 runs one plain process under the same launcher and thread
    count: the reference)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]
    return subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
