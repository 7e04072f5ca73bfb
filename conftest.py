"""Test settings shared by the unit tests and the notebooks that nbval executes.

The notebooks' kernels inherit this process's environment, so every chapter runs at the smoke budget, without
progress bars, whatever the shell that started pytest had set.
"""

import os

os.environ["VITEDU_BUDGET"] = "smoke"
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
