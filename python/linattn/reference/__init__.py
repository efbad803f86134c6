"""Naive float64 reference implementations: the definitions every op is tested against."""
from .delta_rule import delta_rule_recurrence
from .gla import gla_recurrence, naive_chunk_gla
from .lolcats import lolcats_attention_reference
from .swa import sliding_window_attention_reference

__all__ = ["delta_rule_recurrence", "gla_recurrence", "lolcats_attention_reference", "naive_chunk_gla",
           "sliding_window_attention_reference"]
