"""Error types shared by several layers, kept below all of them so that raising one imports nothing else.

`LaunchError` is raised by the recipe reader (`config.py`), the checks before any weight loads (`checks.py`) and the
entry point (`train.py`), and caught by the tools that read recipes (the memory planner, the probe, the evaluator).
Errors raised by one module live in it (`memory.PlannerError`, `probe.ProbeError`, `generation.EvalError`).
"""


class LaunchError(ValueError):
    """A launch problem found before training starts, with its fix in the message."""
