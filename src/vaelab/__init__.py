"""vaelab: train, inspect and score disentangled variational autoencoders.

The Python API mirrors the CLI: ``vaelab.train``, ``vaelab.load_run``, ``vaelab.evaluate``,
``vaelab.sweep`` and ``vaelab.evaluate_runs`` (a sweep's study); datasets via ``vaelab.data.load``.
"""
__version__ = "0.1.0"

from . import hooks as _hooks  # noqa: E402 - torch-free


def _live_pictures(model, images_uint8, device):
    """The trainer's pictures: a reconstruction and a traversal (:func:`vaelab.viz.live.training_images`,
    imported when first drawn). Registered here, where the package is put together, so that
    ``vaelab.training`` never imports ``vaelab.viz`` (vaelab/hooks.py)."""
    from .viz.live import training_images

    return training_images(model, images_uint8, device)


_hooks.register_training_pictures("live", _live_pictures)


def __getattr__(name):  # lazy: `import vaelab` stays cheap for the CLI
    if name in ("train", "load_run", "Run"):
        from . import training as _train

        return getattr(_train, name)
    if name == "evaluate":
        from .metrics.evaluate import evaluate

        return evaluate
    if name == "sweep":
        from .training.sweep import sweep

        return sweep
    if name == "evaluate_runs":
        from .metrics.study import evaluate_runs

        return evaluate_runs
    if name == "import_run":  # another library's saved model as a run folder (vaelab.importers)
        from .importers import import_run

        return import_run
    if name == "explore":  # the subpackage (vaelab.explore.serve), imported on first use
        import importlib

        return importlib.import_module(".explore", __name__)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
