"""Pictures of what a model learned, and one HTML page that holds them.

Every function takes a :class:`~vaelab.training.run.Run` (``vaelab.load_run(path, step=...)``); the
``write_*`` functions save into ``RUN/images`` (or ``out``) and return the paths.

* :func:`reconstruction_grid` / :func:`write_reconstruction` — data images over their reconstructions;
* :func:`traversal`, :func:`make_origins`, :func:`latent_kl` / :func:`write_traversals` — latent traversals
  (PNG grid, one GIF per latent, one GIF of all latents);
* :func:`sample_grid` / :func:`write_samples` — decoded prior draws (UG-VAE: one row per component);
* :func:`plot_curves`, :func:`plot_latent_kl`, :func:`kl_bar_chart` / :func:`write_plots` — curves from
  metrics.jsonl;
* :func:`training_images` — the reconstruction and traversal pictures the trainer logs every m steps;
* :func:`render_all`, :func:`write_report`, :func:`write_comparison` — the HTML pages
  (``vaelab.viz.report.report(runs)`` is the ``vaelab report`` command).

Grids come from :mod:`vaelab.viz.grid` (``make_grid``, ``save_png``). Submodules load lazily, so
``import vaelab.viz`` costs nothing until a picture is drawn.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "reconstruction_grid": "recon", "write_reconstruction": "recon",
    "traversal": "traverse", "make_origins": "traverse", "latent_kl": "traverse", "write_traversals": "traverse",
    "Traversal": "traverse", "Origin": "traverse",
    "sample_grid": "sample", "write_samples": "sample",
    "plot_curves": "plots", "plot_latent_kl": "plots", "kl_bar_chart": "plots", "write_plots": "plots",
    "training_images": "live",
    "render_all": "report", "write_report": "report", "write_comparison": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'vaelab.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
