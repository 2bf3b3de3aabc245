"""GRPO on GSM8K with Hugging Face TRL.

Pipeline: data → answers → rewards → advantages → trainer → train / evaluate.
"""

__version__ = "0.1.0"
