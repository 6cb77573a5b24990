"""UG-VAE experiments (docs/experiments.md; paper §4): interpolation, domain alignment, global structure.

Each takes a UG-VAE run folder (or a loaded run), works with the model in eval mode without gradients and a
seeded RNG, and writes its figures (PNG, PDF) and a JSON of its numbers (with a ``summary`` dict and a
``notes`` list) to ``RUN/experiments/<name>/``. The CLI is ``vaelab experiment <name> RUN``.
"""
from .common import load_ugvae_run
from .domain_alignment import run_domain_alignment
from .global_structure import run_global_structure
from .interpolation import run_interpolation
from .series import RULES, SeriesSampler, digit_stream, series_members

__all__ = ["load_ugvae_run", "run_interpolation", "run_domain_alignment", "run_global_structure",
           "RULES", "SeriesSampler", "digit_stream", "series_members"]
