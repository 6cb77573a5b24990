"""A trained run, reopened from its folder: config, model, encode / decode, dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config, read_toml
from ..errors import VaelabError
from . import checkpoint


class Run:
    """A run folder with its model loaded from a checkpoint (default: the newest).

    ``config`` is the resolved config as a dict (``cfg`` the :class:`Config`), ``model`` the
    network in eval mode, ``step`` the checkpoint's iteration count."""

    def __init__(self, path: Path, cfg: Config, model, step: int, device: torch.device):
        self.path = Path(path)
        self.cfg = cfg
        self.config = cfg.to_dict()
        self.model = model
        self.step = step
        self.device = device
        self._datasets: dict = {}
        self._cl_model = None  # channels-last copy for CPU encoding, made on first use

    def __repr__(self):
        return f"Run({str(self.path)!r}, objective={self.config['model']['objective']!r}, step={self.step})"

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    def _inference_model(self):
        """The model for encoding. On the CPU a channels-last copy: oneDNN's NHWC convolutions encode
        1.7x faster there (4,600 -> 7,800 dSprites images/s for the FactorVAE net on 2 cores), the same
        function up to float rounding; MLPs are unaffected. ``model`` itself stays as trained."""
        if self.device.type != "cpu":
            return self.model
        if self._cl_model is None:
            import copy

            self._cl_model = copy.deepcopy(self.model).to(memory_format=torch.channels_last).eval()
        return self._cl_model

    @torch.no_grad()
    def encode(self, images, batch_size: int = 512) -> np.ndarray:
        """Posterior means ``N x D`` of uint8 images ``N x C x H x W`` (tensor or array)."""
        images = _uint8_images(images)
        model = self._inference_model()
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(self.device).float().div_(255.0)
            out.append(model.representation(x).float().cpu())
        if not out:
            return np.zeros((0, self.latent_dim), dtype=np.float32)
        return torch.cat(out).numpy()

    @torch.no_grad()
    def encode_params(self, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) of the posterior for uint8 images."""
        images = _uint8_images(images)
        if len(images) == 0:
            return (np.zeros((0, self.latent_dim), dtype=np.float32),) * 2
        mus, lvs = [], []
        model = self._inference_model()
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(self.device).float().div_(255.0)
            mu, lv = model.encode(x)
            mus.append(mu.float().cpu())
            lvs.append(lv.float().cpu())
        return torch.cat(mus).numpy(), torch.cat(lvs).numpy()

    def encode_dataset(self, split: str | None = None, n: int | None = None, seed: int = 0,
                       batch_size: int = 512, progress: bool = False) -> dict[str, np.ndarray]:
        """The posterior of every image of a split (default: the run's), or of ``n`` drawn without
        replacement with ``seed``, with the ground truth beside it, as arrays ready for ``np.savez``:

        ``mu``, ``logvar`` (N x D float32), ``index`` (N, the images' dataset indices, ascending),
        ``step`` (the checkpoint's) and, where the data has factors, ``factors`` (N x K int64 class
        indices), ``factor_names``, ``factor_sizes`` and ``factor_values`` (K x max size, the real
        value of each class, NaN-padded). Datasets with a view (dlib's noisy dSprites) draw each
        image's noise from ``seed``."""
        ds = self.dataset(split)
        total = len(ds)
        if n is not None and n < 1:
            raise VaelabError(f"encode: n must be at least 1, got {n}")
        if n is None or n >= total:
            index = np.arange(total, dtype=np.int64)
        else:
            index = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False)).astype(np.int64)
        gen = torch.Generator(device=ds.images.device).manual_seed(seed)
        mus, lvs = [], []
        chunk = max(batch_size, 4096)
        bar = None
        if progress:
            from ..data.prepare import progress as progress_bar  # off under VAELAB_QUIET or without a terminal

            bar = progress_bar(total=len(index), unit="img", desc="encode")
        try:
            for i in range(0, len(index), chunk):
                mu, lv = self.encode_params(ds.gather(index[i:i + chunk], gen), batch_size)
                mus.append(mu)
                lvs.append(lv)
                if bar is not None:
                    bar.update(len(mu))
        finally:
            if bar is not None:
                bar.close()
        d = self.latent_dim
        out = {"mu": np.concatenate(mus) if mus else np.zeros((0, d), np.float32),
               "logvar": np.concatenate(lvs) if lvs else np.zeros((0, d), np.float32),
               "index": index, "step": np.int64(self.step)}
        if ds.has_factors:
            out["factors"] = ds.factors[torch.from_numpy(index)].cpu().numpy().astype(np.int64)
            out["factor_names"] = np.array(list(ds.factor_names), dtype=str)
            out["factor_sizes"] = np.array(list(ds.factor_sizes), dtype=np.int64)
            values = np.full((len(ds.factor_sizes), max(ds.factor_sizes)), np.nan)
            for k, v in enumerate(ds.factor_values):
                values[k, :len(v)] = np.asarray(v, dtype=np.float64)
            out["factor_values"] = values  # K x max size: row k, column c = factor k's class c (NaN past its size)
        return out

    @torch.no_grad()
    def decode(self, z, **kwargs) -> torch.Tensor:
        """Mean images in [0, 1] (``B x C x H x W`` float) for latent codes ``B x D``."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor) else z)
        z = z.to(self.device, torch.float32)
        return self.model.mean_image(self.model.decode(z, **kwargs)).clamp(0, 1).cpu()

    def dataset(self, split: str | None = None):
        """The run's dataset (as configured; ``split`` default: the split it was trained on), loaded once."""
        split = split or self.cfg.data.split or "train"
        if split not in self._datasets:
            from .. import data

            d = self.cfg.data
            self._datasets[split] = data.load(d.name, root=d.root or None, split=split, size=d.size or None,
                                              **d.options)
        return self._datasets[split]

    def checkpoints(self) -> list[Path]:
        return checkpoint.list_checkpoints(self.path)

    def metrics(self) -> list[dict]:
        from .logger import read_metrics

        return read_metrics(self.path)


def _uint8_images(images) -> torch.Tensor:
    """uint8 images as an ``N x C x H x W`` tensor (``N x H x W``: one channel added)."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8:
        raise VaelabError(f"encode expects uint8 images, got {images.dtype}")
    return images.unsqueeze(1) if images.ndim == 3 else images


def is_run_dir(path) -> bool:
    """A folder with a config.toml, or (config.toml lost) a checkpoint: every checkpoint holds the config."""
    p = Path(path)
    if (p / "config.toml").is_file():
        return True
    ckdir = p / "checkpoints"
    try:
        return ckdir.is_dir() and any(checkpoint.step_of(c.name) is not None and (c / "state.json").is_file()
                                      for c in ckdir.iterdir())
    except OSError:
        return False


def load_run(path, step: int | None = None, device: str = "cpu") -> Run:
    """Open a run folder; ``step`` picks an older checkpoint (default: the newest)."""
    from ..models import build_model
    from .trainer import pick_device

    path = Path(path)
    if not path.is_dir():
        raise VaelabError(f"{path} is not a folder: expected a run folder made by `vaelab train`")
    if not is_run_dir(path):
        raise VaelabError(f"{path} is not a run folder (no config.toml, no checkpoint); train one with `vaelab train`")
    ck = checkpoint.find(path, step)
    tensors, state = checkpoint.load(ck)
    cfg = Config.from_dict(state.get("config") or read_toml(path / "config.toml")).validate()
    dev = pick_device(device)
    shape = state.get("image_shape")
    if shape is None:
        raise VaelabError(f"checkpoint {ck} has no image_shape; it was not written by this vaelab version")
    model = build_model(cfg.model, tuple(shape), num_train=int(state.get("num_train", 1)))
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise VaelabError(f"checkpoint {ck} does not match its config: {checkpoint.state_dict_mismatch(e)}") from None
    model.to(dev).eval()
    return Run(path, cfg, model, int(state["step"]), dev)
