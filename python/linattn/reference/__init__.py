"""Naive float64 reference implementations: the definitions every op is tested against."""
from .gla import gla_recurrence, naive_chunk_gla

__all__ = ["gla_recurrence", "naive_chunk_gla"]
