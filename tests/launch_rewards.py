"""A reward with variance on a tiny random model (its completions are never right), for launch tests."""

from trl_gsm8k.rewards import completion_text


def char_count_reward(completions, **kwargs):
    return [float(len(completion_text(c) or "") % 7) for c in completions]
