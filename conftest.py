"""Test settings shared by the unit tests and the notebooks that nbval executes.

The notebooks' kernels inherit this process's environment, so every chapter runs at the smoke budget, without
progress bars, whatever the shell that started pytest had set.
"""

import os

os.environ["VITEDU_BUDGET"] = "smoke"
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

_notebook_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] = _notebook_seconds.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """How long each notebook took to execute, so the smoke budget's two-minute limit stays visible."""
    if _notebook_seconds:
        terminalreporter.section("notebook execution times (smoke budget)")
        for path, seconds in sorted(_notebook_seconds.items()):
            terminalreporter.write_line(f"{seconds:7.1f} s  {path}")
