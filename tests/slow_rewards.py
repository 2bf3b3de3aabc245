"""A reward that makes a training step long for real, for the Ctrl-C tests: from step SLOW_REWARD_FROM_STEP on
(counted in completed steps) it writes that step number to SLOW_REWARD_MARKER, so a test knows the step is under
way, then sleeps SLOW_REWARD_SECONDS. It scores 0, so adding it changes no advantage. Without the variables set it
is instant."""

import os
import time
from pathlib import Path


def slow_reward(completions, trainer_state=None, **kwargs):
    marker = os.environ.get("SLOW_REWARD_MARKER")
    step = trainer_state.global_step if trainer_state is not None else 0
    if marker and step >= int(os.environ.get("SLOW_REWARD_FROM_STEP", "0")):
        Path(marker).write_text(str(step))
        time.sleep(float(os.environ["SLOW_REWARD_SECONDS"]))
    return [0.0] * len(completions)
