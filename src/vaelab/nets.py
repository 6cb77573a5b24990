"""Encoders, decoders and the FactorVAE discriminator (docs/nets.md).

Every entry of :data:`NETS` is a builder ``builder(image_shape, latent_dim, **options) -> (encoder,
decoder)``:

* ``encoder(x)`` takes float images ``B×C×H×W`` in [0, 1] and returns ``B×2D``: the first D numbers are
  the posterior mean μ, the last D the log-variance ln σ² (docs/conventions.md#posterior-and-kl, 1Konny/dlib order);
* ``decoder(z)`` takes ``B×D`` codes and returns the unconstrained output ``o`` (``B×C×H×W``): logits for
  the Bernoulli likelihood, ``sigmoid(o)`` is the mean image for both likelihoods (docs/conventions.md#likelihoods).

Parameter counts (docs/nets.md, BatchNorm running statistics excluded) are pinned in ``tests/test_nets.py``.
The UG-VAE trunks and decoders (docs/nets.md#ug-vae-nets) are in :data:`UGVAE_NETS`; ``NETS["ugvae_fc28"]`` and
``NETS["ugvae_conv64"]`` wrap them as plain VAE nets (trunk + one ``Lin(256→2D)`` head).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .errors import VaelabError, closest

__all__ = [
    "NETS",
    "NET_ALIASES",
    "UGVAE_NETS",
    "build_net",
    "canonical_net",
    "register_net",
    "disc_mlp",
    "count_parameters",
]


# --------------------------------------------------------------------------- helpers


def count_parameters(*modules: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers, so excluded)."""
    return sum(p.numel() for m in modules for p in m.parameters())


def _check_shape(name: str, image_shape, sides: tuple[int, ...] = (64,), hint: str = "") -> tuple[int, int, int]:
    if len(image_shape) != 3:
        raise VaelabError(f"net {name!r} needs images C×H×W, got shape {tuple(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    if h != w or h not in sides:
        want = " or ".join(f"{s}×{s}" for s in sides)
        raise VaelabError(
            f"net {name!r} needs {want} images, got {c}×{h}×{w}; "
            f"{hint or 'resize the data (data size) or pick a net that fits (higgins_mlp takes any size)'}"
        )
    return c, h, w


def _init(module: nn.Module, kind: str, types: tuple[type, ...]) -> None:
    """Initialise weights of the given layer types; biases to zero."""
    for m in module.modules():
        if isinstance(m, types):
            if kind == "kaiming":
                nn.init.kaiming_normal_(m.weight)  # 1Konny `kaiming_init` (fan_in, gain √2)
            elif kind == "normal02":
                nn.init.normal_(m.weight, 0.0, 0.02)  # 1Konny/FactorVAE `normal_init`
            elif kind == "glorot":
                nn.init.xavier_uniform_(m.weight)  # TF/Keras glorot_uniform (dlib)
            else:  # pragma: no cover - programming error
                raise ValueError(kind)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _View(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class _Heads(nn.Module):
    """A trunk followed by two dense heads μ and ln σ², concatenated to ``B×2D``."""

    def __init__(self, trunk: nn.Module, features: int, latent_dim: int):
        super().__init__()
        self.trunk = trunk
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.cat([self.mu(h), self.logvar(h)], dim=1)


# --------------------------------------------------------------------------- §2.1 burgess64


def burgess64(image_shape, latent_dim: int):
    """Burgess et al. conv net (1Konny/Beta-VAE BetaVAE_B; disvae). 502,005 params at C1 D10."""
    c, _, _ = _check_shape("burgess64", image_shape)
    d = latent_dim
    enc = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),  # 32×4×4
        nn.Flatten(),
        nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 2 * d),
    )
    dec = nn.Sequential(
        nn.Linear(d, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 512), nn.ReLU(),
        _View(32, 4, 4),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
    )
    # 1Konny kaiming_init touches Linear and Conv2d only; ConvTranspose2d keeps PyTorch's default.
    _init(enc, "kaiming", (nn.Linear, nn.Conv2d))
    _init(dec, "kaiming", (nn.Linear, nn.Conv2d))
    return enc, dec


def burgess32(image_shape, latent_dim: int):
    """YannDubs/disentangling-vae's Burgess net on 32×32 images (``disvae/models/encoders.py``
    EncoderBurgess, ``decoders.py`` DecoderBurgess with img_size C×32×32: its MNIST and Fashion-MNIST).
    The 64×64 net without its fourth convolution and first transposed convolution. 469,173 params at C1 D10.

    * Encoder: 3 × [Conv(→32,4,2,1) ReLU] (32×4×4) → flatten 512 → Lin(512→256) ReLU → Lin(256→256) ReLU →
      Lin(256→2D).
    * Decoder: Lin(D→256) ReLU → Lin(256→256) ReLU → Lin(256→512) ReLU → 32×4×4 → 2 × [ConvT(32→32,4,2,1)
      ReLU] → ConvT(32→C,4,2,1) → ``o`` (disvae applies the sigmoid inside the decoder; here it is the
      likelihood's mean).

    disvae's encoder head emits μ and ln σ² interleaved (``view(-1, D, 2).unbind(-1)``); this net emits
    μ then ln σ² (the order of every vaelab net): ``vaelab import disentangling-vae`` reorders the rows of
    the last layer, which gives the same function. Init: disvae ``weights_init``, Kaiming-uniform (ReLU
    gain) on every conv, transposed conv and dense weight, PyTorch's default biases.
    """
    c, _, _ = _check_shape("burgess32", image_shape, (32,), "resize the data to 32×32 (data size 32) or use burgess64")
    d = latent_dim
    enc = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),  # 32×4×4
        nn.Flatten(),
        nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 2 * d),
    )
    dec = nn.Sequential(
        nn.Linear(d, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 512), nn.ReLU(),
        _View(32, 4, 4),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
    )
    for m in list(enc.modules()) + list(dec.modules()):  # disvae/utils/initialization.py weights_init
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    return enc, dec


class _Shift(nn.Module):
    """Adds a constant to the input (Knight13/beta-VAE-disentanglement feeds its nets x − 0.5)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value

    def extra_repr(self) -> str:
        return f"value={self.value}"


def _bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # Keras BatchNormalization defaults (eps 1e-3, momentum 0.99)


def _bn1d(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=1e-3, momentum=0.01)  # Keras defaults, as _bn2d


def burgess64_keras(image_shape, latent_dim: int):
    """Knight13/beta-VAE-disentanglement's Keras variant of burgess64 (``src/models/encoder.py``
    DeepMindEncoder, ``src/models/decoder.py`` DeepMindDecoder). 768,185 params at C1 D10.

    * Encoder: x − 0.5 (the source's ``pre_process(action="simple")``) → 4 × [Conv(→32,4,2,1) BN ReLU] (Keras
      "same" = pad 1 here) → flatten 512 → 2 × [Lin(→256) BN ReLU] → Lin(256→2D) linear → heads Lin(2D→D) μ,
      Lin(2D→D) ln σ².
    * Decoder: 2 × [Lin(→256) BN ReLU] → Lin(256→512) ReLU BN (the source's order: activation, then BN) →
      512×1×1 → ConvT(512→32,4,2,0) BN ReLU (Keras "valid": 1 → 4) → 3 × [ConvT(32→32,4,2,1) BN ReLU] →
      ConvT(32→C,4,2,1) → ``o``.

    Output: the source ends in tanh and regresses x − 0.5 ∈ [−0.5, 0.5]. Here the decoder returns the last
    layer's pre-activation ``o`` and the likelihood takes the mean as sigmoid(o) = ½ + ½·tanh(o/2)
    (docs/conventions.md#likelihoods): the same tanh output, shifted by ½ and scaled to the data range [0, 1] (the factor ½ on
    ``o`` is absorbed by the last layer's weights). The one difference: the source's tanh spans
    (−1, 1), twice its data range, so its mean can overshoot (it clips before saving images); here the
    mean stays in [0, 1]. The source's per-pixel mean MSE is not convertible (docs/conventions.md#reduction): use
    ``likelihood = "gaussian"`` (σ² ½ = sum of squared errors), as the Knight13/beta-VAE-disentanglement presets do.

    BatchNorm: Keras defaults (ε 1e-3, momentum 0.99 = PyTorch momentum 0.01); batch statistics in
    ``train()`` mode, running statistics in ``eval()`` mode (validation, encoding, traversals).
    Init: Keras defaults, Glorot-uniform kernels and zero biases on every Dense / Conv / ConvT.
    """
    c, _, _ = _check_shape("burgess64_keras", image_shape)
    d = latent_dim
    trunk: list[nn.Module] = [_Shift(-0.5)]
    a = c
    for _ in range(4):  # 64 -> 32 -> 16 -> 8 -> 4
        trunk += [nn.Conv2d(a, 32, 4, 2, 1), _bn2d(32), nn.ReLU()]
        a = 32
    trunk += [
        nn.Flatten(),  # 32×4×4 = 512 (CHW order; Keras flattens HWC, which matters only for weight import)
        nn.Linear(512, 256), _bn1d(256), nn.ReLU(),
        nn.Linear(256, 256), _bn1d(256), nn.ReLU(),
        nn.Linear(256, 2 * d),  # the source's extra linear Dense(2D) before the two heads
    ]
    enc = _Heads(nn.Sequential(*trunk), 2 * d, d)
    dec: list[nn.Module] = [
        nn.Linear(d, 256), _bn1d(256), nn.ReLU(),
        nn.Linear(256, 256), _bn1d(256), nn.ReLU(),
        nn.Linear(256, 512), nn.ReLU(), _bn1d(512),
        _View(512, 1, 1),
        nn.ConvTranspose2d(512, 32, 4, 2, 0), _bn2d(32), nn.ReLU(),  # "valid": 1×1 -> 4×4
    ]
    for _ in range(3):  # 8, 16, 32
        dec += [nn.ConvTranspose2d(32, 32, 4, 2, 1), _bn2d(32), nn.ReLU()]
    dec.append(nn.ConvTranspose2d(32, c, 4, 2, 1))  # 64; the source's tanh is the likelihood's sigmoid here
    dec_net = nn.Sequential(*dec)
    layers = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    _init(enc, "glorot", layers)  # Keras defaults: glorot_uniform kernels, zero biases
    _init(dec_net, "glorot", layers)
    return enc, dec_net


# --------------------------------------------------------------------------- §2.2 fvae64


def fvae64(image_shape, latent_dim: int, features: int | None = None):
    """1Konny/FactorVAE FactorVAE1/2 net; F = 128 for C=1, 256 for C=3 unless ``features`` is given."""
    c, _, _ = _check_shape("fvae64", image_shape)
    d = latent_dim
    f = int(features) if features is not None else (128 if c == 1 else 256)
    enc = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(64, f, 4, 1, 0), nn.ReLU(),  # F×1×1
        nn.Conv2d(f, 2 * d, 1),
        nn.Flatten(),
    )
    dec = nn.Sequential(
        _View(d, 1, 1),
        nn.Conv2d(d, f, 1), nn.ReLU(),
        nn.ConvTranspose2d(f, 64, 4, 1, 0), nn.ReLU(),  # 4×4
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
    )
    # 1Konny/FactorVAE normal_init: N(0, 0.02) on Linear/Conv2d, zero bias; ConvTranspose2d default.
    _init(enc, "normal02", (nn.Linear, nn.Conv2d))
    _init(dec, "normal02", (nn.Linear, nn.Conv2d))
    return enc, dec


def betavae_h(image_shape, latent_dim: int):
    """1Konny/Beta-VAE ``model.py`` BetaVAE_H (docs/nets.md#betavae_h): the fvae64 stack at F 256 with dense layers in
    place of the two 1×1 convolutions (same parameter counts: 765,335 at C3 D10), Kaiming init.

    * Encoder: Conv(C→32,4,2,1) ReLU → Conv(32→32,4,2,1) ReLU → Conv(32→64,4,2,1) ReLU →
      Conv(64→64,4,2,1) ReLU → Conv(64→256,4,1,0) ReLU (256×1×1) → flatten 256 → Lin(256→2D).
    * Decoder: Lin(D→256) → 256×1×1 → ReLU → ConvT(256→64,4,1,0) ReLU (4×4) → ConvT(64→64,4,2,1) ReLU →
      ConvT(64→32,4,2,1) ReLU → ConvT(32→32,4,2,1) ReLU → ConvT(32→C,4,2,1) → ``o``.

    F is 256 for every C (the reference hard-codes it), unlike fvae64's F 128 at C 1.
    """
    c, _, _ = _check_shape("betavae_h", image_shape)
    d = latent_dim
    enc = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 256, 4, 1, 0), nn.ReLU(),  # 256×1×1
        nn.Flatten(),
        nn.Linear(256, 2 * d),
    )
    dec = nn.Sequential(
        nn.Linear(d, 256),
        _View(256, 1, 1), nn.ReLU(),  # the reference's order: view, then ReLU
        nn.ConvTranspose2d(256, 64, 4, 1, 0), nn.ReLU(),  # 4×4
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
    )
    # 1Konny kaiming_init touches Linear and Conv2d only; ConvTranspose2d keeps PyTorch's default (as burgess64).
    _init(enc, "kaiming", (nn.Linear, nn.Conv2d))
    _init(dec, "kaiming", (nn.Linear, nn.Conv2d))
    return enc, dec


# --------------------------------------------------------------------------- §2.3 dlib_conv


def dlib_conv(image_shape, latent_dim: int):
    """disentanglement_lib conv_encoder / deconv_decoder (kernel 2 in encoder layers 3–4, as dlib)."""
    c, _, _ = _check_shape("dlib_conv", image_shape)
    d = latent_dim
    trunk = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),  # TF "same", stride 2, k4 -> pad 1
        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 2, 2, 0), nn.ReLU(),  # k2 -> pad 0
        nn.Conv2d(64, 64, 2, 2, 0), nn.ReLU(),  # 64×4×4
        nn.Flatten(),  # CHW order (dlib flattens HWC; matters only for weight import)
        nn.Linear(1024, 256), nn.ReLU(),
    )
    enc = _Heads(trunk, 256, d)
    dec = nn.Sequential(
        nn.Linear(d, 256), nn.ReLU(),
        nn.Linear(256, 1024), nn.ReLU(),
        _View(64, 4, 4),
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
    )
    layers = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    _init(enc, "glorot", layers)  # TF defaults: glorot_uniform, zero bias
    _init(dec, "glorot", layers)
    return enc, dec


# --------------------------------------------------------------------------- §2.4 higgins_mlp


def higgins_mlp(image_shape, latent_dim: int, hidden: int = 1200):
    """β-VAE dSprites MLP (dlib fc_encoder / fc_decoder). Works for any C×H×W (flattened)."""
    if len(image_shape) != 3:
        raise VaelabError(f"net 'higgins_mlp' needs images C×H×W, got shape {tuple(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    p, d, u = c * h * w, latent_dim, int(hidden)
    trunk = nn.Sequential(
        nn.Flatten(),
        nn.Linear(p, u), nn.ReLU(),
        nn.Linear(u, u), nn.ReLU(),
    )
    enc = _Heads(trunk, u, d)  # no ReLU on the heads (Near32/PYTORCH_VAE's copy has one: not copied)
    dec = nn.Sequential(
        nn.Linear(d, u), nn.Tanh(),
        nn.Linear(u, u), nn.Tanh(),
        nn.Linear(u, u), nn.Tanh(),
        nn.Linear(u, p),
        _View(c, h, w),
    )
    _init(enc, "glorot", (nn.Linear,))
    _init(dec, "glorot", (nn.Linear,))
    return enc, dec


# --------------------------------------------------------------------------- §2.5 discriminator


def disc_mlp(latent_dim: int, hidden_layers: int = 5, init: str = "normal02", width: int = 1000) -> nn.Module:
    """FactorVAE discriminator: H × [Lin(→1000), LReLU(0.2)] → Lin(1000→2) logits.

    ``hidden_layers`` 5 + ``init="normal02"`` = 1Konny/FactorVAE (4,017,002 params at D10);
    6 + ``"glorot"`` = dlib ``fc_discriminator`` (5,018,002). Logit 0 = "from q(z)", 1 = "permuted".
    """
    if int(hidden_layers) < 1:
        raise VaelabError(f"disc_layers must be at least 1, got {hidden_layers}")
    if init not in ("normal02", "glorot"):
        raise VaelabError(f"unknown disc_init {init!r}{closest(str(init), ('normal02', 'glorot'))}; "
                          "valid: 'normal02', 'glorot'")
    layers: list[nn.Module] = []
    a = latent_dim
    for _ in range(int(hidden_layers)):
        layers += [nn.Linear(a, width), nn.LeakyReLU(0.2)]
        a = width
    layers.append(nn.Linear(a, 2))
    net = nn.Sequential(*layers)
    _init(net, init, (nn.Linear,))
    return net


# --------------------------------------------------------------------------- §2.6 UG-VAE trunks


def ugvae_fc28_trunk(image_shape) -> nn.Module:
    """UG-VAE MLP trunk: flatten C·784 → Lin(→256) ReLU."""
    c, _, _ = _check_shape("ugvae_fc28", image_shape, (28,), "use 28×28 images (MNIST) or ugvae_conv64")
    return nn.Sequential(nn.Flatten(), nn.Linear(c * 28 * 28, 256), nn.ReLU())


def ugvae_fc28_decoder(image_shape, in_dim: int) -> nn.Module:
    c, _, _ = _check_shape("ugvae_fc28", image_shape, (28,), "use 28×28 images (MNIST) or ugvae_conv64")
    return nn.Sequential(
        nn.Linear(in_dim, 256), nn.ReLU(),
        nn.Linear(256, c * 28 * 28),
        _View(c, 28, 28),
    )


def ugvae_conv64_trunk(image_shape) -> nn.Module:
    """UG-VAE conv trunk: the fvae64 encoder stack (F 256) with BatchNorm."""
    c, _, _ = _check_shape("ugvae_conv64", image_shape, (64,), "resize the data to 64×64 or use ugvae_fc28")
    chans = [(c, 32, 2, 1), (32, 32, 2, 1), (32, 64, 2, 1), (64, 64, 2, 1), (64, 256, 1, 0)]
    layers: list[nn.Module] = []
    for a, b, s, p in chans:
        layers += [nn.Conv2d(a, b, 4, s, p), nn.BatchNorm2d(b), nn.ReLU()]
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def ugvae_conv64_decoder(image_shape, in_dim: int) -> nn.Module:
    c, _, _ = _check_shape("ugvae_conv64", image_shape, (64,), "resize the data to 64×64 or use ugvae_fc28")
    return nn.Sequential(
        nn.Linear(in_dim, 256),
        _View(256, 1, 1), nn.ReLU(),
        nn.ConvTranspose2d(256, 64, 4, 1, 0), nn.ReLU(),
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
    )


#: name -> (trunk_builder(image_shape) -> module giving B×256, decoder_builder(image_shape, in_dim)).
#: PyTorch default initialisation (ipeis/UG-VAE does not re-initialise).
UGVAE_NETS: dict[str, tuple[Callable, Callable]] = {
    "ugvae_fc28": (ugvae_fc28_trunk, ugvae_fc28_decoder),
    "ugvae_conv64": (ugvae_conv64_trunk, ugvae_conv64_decoder),
}
UGVAE_TRUNK_FEATURES = 256


def _ugvae_plain(name: str):
    trunk_b, dec_b = UGVAE_NETS[name]

    def build(image_shape, latent_dim: int):
        enc = nn.Sequential(trunk_b(image_shape), nn.Linear(UGVAE_TRUNK_FEATURES, 2 * latent_dim))
        return enc, dec_b(image_shape, latent_dim)

    build.__name__ = name
    build.__doc__ = f"UG-VAE {name} trunk + Lin(256→2D) head / its decoder on z alone (plain VAE use)."
    return build


# --------------------------------------------------------------------------- §2.7 near32_conv, xys256


def near32_conv(image_shape, latent_dim: int, depth: int = 3, width: int = 32, batch_norm: bool = True,
                slope: float = 0.05):
    """Near32/PYTORCH_VAE's configurable conv (``models.py`` Encoder/Decoder), generic in L, w, S, C.

    Computes the flatten size (w·2^{L−1})·(S/2^L)² and the last decoder kernel S − 4·2^L + 1 that the
    reference hard-codes (8,192 and 33 for S64 L3 w32).
    """
    if len(image_shape) != 3:
        raise VaelabError(f"net 'near32_conv' needs images C×H×W, got shape {tuple(image_shape)}")
    c, h, w_img = (int(s) for s in image_shape)
    L, w, d = int(depth), int(width), latent_dim
    if L < 1 or w < 1:
        raise VaelabError(f"near32_conv needs depth >= 1 and width >= 1, got depth {L}, width {w}")
    s = h
    if h != w_img or s % (2 ** L) or s < 4 * 2 ** L:
        raise VaelabError(
            f"net 'near32_conv' with depth {L} needs square images with side a multiple of {2 ** L} and at "
            f"least {4 * 2 ** L}, got {c}×{h}×{w_img}; change net_options.depth or the image size"
        )
    act = lambda: nn.LeakyReLU(slope)  # noqa: E731
    enc: list[nn.Module] = [nn.Conv2d(c, w, 4, 2, 1), act()]  # no BN on the first layer
    for i in range(1, L):
        enc.append(nn.Conv2d(w * 2 ** (i - 1), w * 2 ** i, 4, 2, 1))
        if batch_norm:
            enc.append(nn.BatchNorm2d(w * 2 ** i))
        enc.append(act())
    flat = w * 2 ** (L - 1) * (s // 2 ** L) ** 2
    enc += [nn.Flatten(), nn.Linear(flat, 2048), act(), nn.Linear(2048, 1024), act(), nn.Linear(1024, 2 * d)]
    dec: list[nn.Module] = [_View(d, 1, 1), nn.ConvTranspose2d(d, w * 2 ** L, 4, 1, 0), act()]
    for i in range(L - 1, -1, -1):
        dec.append(nn.ConvTranspose2d(w * 2 ** (i + 1), w * 2 ** i, 4, 2, 1))
        if batch_norm:
            dec.append(nn.BatchNorm2d(w * 2 ** i))
        dec.append(act())
    dec.append(nn.ConvTranspose2d(w, c, s - 4 * 2 ** L + 1, 1, 0))
    return nn.Sequential(*enc), nn.Sequential(*dec)  # PyTorch default init (as the source)


def xys256(image_shape, latent_dim: int, slope: float = 0.05):
    """Near32/PYTORCH_VAE's gaze net (EncoderXYS/DecoderXYS): 256×256, widths 32, kernel 6; 7,876,855 params at C3 D10."""
    c, _, _ = _check_shape("xys256", image_shape, (256,), "resize the data to 256×256")
    d = latent_dim
    act = lambda: nn.LeakyReLU(slope)  # noqa: E731
    enc: list[nn.Module] = [nn.Conv2d(c, 32, 4, 2, 1), act()]  # 128
    for _ in range(4):  # 63, 30, 14, 6
        enc += [nn.Conv2d(32, 32, 6, 2, 1), nn.BatchNorm2d(32), act()]
    enc += [nn.Flatten(), nn.Linear(32 * 6 * 6, 2048), act(), nn.Linear(2048, 1024), act(), nn.Linear(1024, 2 * d)]
    dec: list[nn.Module] = [
        _View(d, 1, 1),
        nn.ConvTranspose2d(d, 2048, 6, 1, 0), act(),  # 6 (2048 = the reference ignoring w; kept)
        nn.ConvTranspose2d(2048, 32, 6, 2, 1), nn.BatchNorm2d(32), act(),  # 14
    ]
    for _ in range(4):  # 30, 62, 126, 254
        dec += [nn.ConvTranspose2d(32, 32, 6, 2, 1), nn.BatchNorm2d(32), act()]
    dec.append(nn.ConvTranspose2d(32, c, 3, 1, 0))  # 256
    return nn.Sequential(*enc), nn.Sequential(*dec)


# --------------------------------------------------------------------------- §2.8 antixk64


def antixk64(image_shape, latent_dim: int):
    """scarletteshu/Pytorch-bcvae's net (after AntixK/PyTorch-VAE). 1,473,709 params at C1 D6."""
    c, _, _ = _check_shape("antixk64", image_shape)
    d = latent_dim
    trunk: list[nn.Module] = []
    a = c
    for b in (32, 64, 128, 256):
        trunk += [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.01)]
        a = b
    trunk.append(nn.Flatten())  # 256×4×4 = 4096
    enc = _Heads(nn.Sequential(*trunk), 4096, d)
    dec: list[nn.Module] = [nn.Linear(d, 4096), _View(256, 4, 4)]  # no activation (as the source)
    for a, b in ((256, 128), (128, 64), (64, 32)):
        dec += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.01)]
    dec += [
        nn.ConvTranspose2d(32, 32, 4, 2, 1, output_padding=1), nn.BatchNorm2d(32), nn.LeakyReLU(0.01),  # 65
        nn.Conv2d(32, c, 4, 1, 1),  # 64
    ]
    return enc, nn.Sequential(*dec)


# --------------------------------------------------------------------------- registry

NETS: dict[str, Callable] = {
    "burgess64": burgess64,
    "burgess32": burgess32,
    "burgess64_keras": burgess64_keras,
    "fvae64": fvae64,
    "betavae_h": betavae_h,
    "dlib_conv": dlib_conv,
    "higgins_mlp": higgins_mlp,
    "near32_conv": near32_conv,
    "xys256": xys256,
    "antixk64": antixk64,
    "ugvae_fc28": _ugvae_plain("ugvae_fc28"),
    "ugvae_conv64": _ugvae_plain("ugvae_conv64"),
}

NET_ALIASES: dict[str, str] = {
    "burgess": "burgess64",
    "factorvae-conv": "fvae64",
    "betavae-h": "betavae_h",
    "higgins-mlp": "higgins_mlp",
    "conv": "near32_conv",
    "mlp28": "ugvae_fc28",
}


def register_net(name: str, builder: Callable | None = None, *, aliases=()):
    """Add net ``name``: ``builder(image_shape, latent_dim, **options) -> (encoder, decoder)`` as the
    entries of :data:`NETS` (the encoder returns B×2D, μ then ln σ²; the decoder B×C×H×W logits); its
    keyword parameters after the first two are the net's ``net_options``. Also a decorator:
    ``@register_net("mine")``. A name taken by another builder is an error."""
    from .plugins import claim

    if builder is None:
        return lambda fn: register_net(name, fn, aliases=aliases)
    if not callable(builder):
        raise VaelabError(f"register_net({name!r}, ...) takes a builder function, got {builder!r}")
    claim(NETS, "net", str(name), builder)
    for alias in (aliases,) if isinstance(aliases, str) else aliases:
        claim(NET_ALIASES, "net alias", str(alias), str(name), origin=lambda target: f"net {target!r}")
    return builder


def canonical_net(name: str) -> str:
    """Resolve aliases; unknown name -> VaelabError listing the nets."""
    name = str(name)
    if name not in NETS and name not in NET_ALIASES:
        from .plugins import load_entry_points

        load_entry_points()  # a net of an installed plugin
    if name in NETS:
        return name
    if name in NET_ALIASES:
        return NET_ALIASES[name]
    names = sorted(NETS) + sorted(NET_ALIASES)
    raise VaelabError(f"unknown net {name!r}{closest(name, names)}; valid: {', '.join(sorted(NETS))} "
                      f"(aliases: {', '.join(f'{a}={b}' for a, b in sorted(NET_ALIASES.items()))})")


def _options_of(fn: Callable) -> list[str]:
    import inspect

    params = list(inspect.signature(fn).parameters.values())[2:]
    return [p.name for p in params]


def build_net(name: str, image_shape, latent_dim: int, options: dict | None = None):
    """Build ``(encoder, decoder)`` for a (possibly aliased) net name, validating the options."""
    canon = canonical_net(name)
    builder = NETS[canon]
    options = dict(options or {})
    valid = _options_of(builder)
    for key in options:
        if key not in valid:
            raise VaelabError(
                f"unknown net_options key {key!r} for net {canon!r}{closest(key, valid)}; "
                f"valid: {', '.join(valid) if valid else '(none)'}"
            )
    if int(latent_dim) < 1:
        raise VaelabError(f"latent_dim must be at least 1, got {latent_dim}")
    return builder(tuple(int(s) for s in image_shape), int(latent_dim), **options)
