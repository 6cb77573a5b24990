"""Networks (docs/nets.md): parameter counts, output shapes, size checks, initialisation."""
import math

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.nets import NET_ALIASES, NETS, build_net, canonical_net, count_parameters, disc_mlp

# (net, image_shape, D, options, encoder params, decoder params or None, total) — numbers from docs/nets.md#parameter-counts
COUNTS = [
    ("burgess64", (1, 64, 64), 10, {}, 252_052, 249_953, 502_005),
    ("burgess64", (3, 64, 64), 10, {}, None, None, 504_055),
    ("burgess64", (3, 64, 64), 32, {}, None, None, 520_995),
    ("burgess64", (3, 64, 64), 16, {}, None, None, 508_675),
    ("fvae64", (1, 64, 64), 10, {}, 249_172, 247_873, 497_045),
    ("fvae64", (3, 64, 64), 10, {}, 383_956, 381_379, 765_335),
    ("dlib_conv", (1, 64, 64), 10, {}, 309_204, 381_313, 690_517),
    ("dlib_conv", (3, 64, 64), 10, {}, None, None, 692_567),
    ("higgins_mlp", (1, 64, 64), 10, {}, 6_381_620, 7_814_896, 14_196_516),
    ("near32_conv", (1, 64, 64), 10, {"depth": 3, "width": 32}, 19_062_900, 764_865, 19_827_765),
    ("xys256", (3, 256, 256), 10, {}, 4_629_428, 3_247_427, 7_876_855),
    ("antixk64", (1, 64, 64), 6, {}, 739_244, 734_465, 1_473_709),
    # burgess64_keras (docs/nets.md#burgess64_keras, Knight13/beta-VAE-disentanglement), counted by hand (BN = 2 params per channel, no running stats):
    # enc  conv1 16C·32+32 = 512C+32, BN 64; 3 × (16·32·32+32 = 16,416 + BN 64) = 49,440;
    #      Lin(512→256) 131,328 + BN 512; Lin(256→256) 65,792 + BN 512; Lin(256→2D) 514D;
    #      heads 2 × (2D·D + D) = 4D² + 2D   -> 512C + 247,680 + 516D + 4D²  (C1 D10: 253,752)
    # dec  Lin(D→256) 256D+256 + BN 512; Lin(256→256) 65,792 + BN 512; Lin(256→512) 131,584 + BN 1,024;
    #      ConvT(512→32,4) 262,176 + BN 64; 3 × (16,416 + BN 64) = 49,440; ConvT(32→C,4) 513C
    #      -> 256D + 511,360 + 513C  (C1 D10: 514,433)
    ("burgess64_keras", (1, 64, 64), 10, {}, 253_752, 514_433, 768_185),
    ("burgess64_keras", (3, 64, 64), 10, {}, 254_776, 515_459, 770_235),
    # betavae_h (docs/nets.md#betavae_h: 1Konny/Beta-VAE BetaVAE_H = fvae64 at F 256, dense for 1×1), counted by hand:
    # enc  Conv(C→32,4) 16C·32+32 = 512C+32; Conv(32→32,4) 16,416; Conv(32→64,4) 32,832; Conv(64→64,4) 65,600;
    #      Conv(64→256,4,1,0) 262,400; Lin(256→2D) 512D+2D = 514D   -> 512C + 377,280 + 514D
    # dec  Lin(D→256) 256D+256; ConvT(256→64,4) 262,208; ConvT(64→64) 65,600; ConvT(64→32) 32,800;
    #      ConvT(32→32) 16,416; ConvT(32→C) 16·32·C+C = 513C         -> 256D + 377,280 + 513C
    # C3 D10: 383,956 + 381,379 = 765,335 (= fvae64 C3 F256, as docs/nets.md#betavae_h says); C1 D10 (F stays 256, unlike
    # fvae64's F128): 382,932 + 380,353 = 763,285; C3 D32 (betavae-celeba-b10-z32): 395,264 + 387,011 = 782,275;
    # C3 D16 (betavae-3dchairs-b4-z16): 387,040 + 382,915 = 769,955.
    ("betavae_h", (3, 64, 64), 10, {}, 383_956, 381_379, 765_335),
    ("betavae_h", (1, 64, 64), 10, {}, 382_932, 380_353, 763_285),
    ("betavae_h", (3, 64, 64), 32, {}, 395_264, 387_011, 782_275),
    ("betavae_h", (3, 64, 64), 16, {}, 387_040, 382_915, 769_955),
]


@pytest.mark.parametrize("name,shape,d,opts,n_enc,n_dec,n_total", COUNTS)
def test_parameter_counts(name, shape, d, opts, n_enc, n_dec, n_total):
    enc, dec = build_net(name, shape, d, opts)
    if n_enc is not None:
        assert count_parameters(enc) == n_enc
        assert count_parameters(dec) == n_dec
    assert count_parameters(enc, dec) == n_total


def test_disc_counts_and_init():
    d5 = disc_mlp(10, hidden_layers=5, init="normal02")
    d6 = disc_mlp(10, hidden_layers=6, init="glorot")
    assert count_parameters(d5) == 4_017_002
    assert count_parameters(d6) == 5_018_002
    lin5 = [m for m in d5 if isinstance(m, torch.nn.Linear)]
    assert abs(lin5[1].weight.std().item() - 0.02) < 0.001
    assert all(m.bias.detach().abs().max().item() == 0.0 for m in lin5)
    lin6 = [m for m in d6 if isinstance(m, torch.nn.Linear)]
    bound = math.sqrt(6.0 / (1000 + 1000))
    assert lin6[2].weight.abs().max().item() <= bound
    assert lin6[2].weight.abs().max().item() > 0.9 * bound
    slopes = {m.negative_slope for m in d5 if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}
    out = d5(torch.randn(4, 10))
    assert out.shape == (4, 2)


SHAPES = [
    ("burgess64", (1, 64, 64), {}),
    ("burgess", (3, 64, 64), {}),
    ("burgess64_keras", (1, 64, 64), {}),
    ("burgess64_keras", (3, 64, 64), {}),
    ("fvae64", (3, 64, 64), {}),
    ("factorvae-conv", (1, 64, 64), {"features": 16}),
    ("betavae_h", (3, 64, 64), {}),
    ("betavae-h", (1, 64, 64), {}),
    ("dlib_conv", (3, 64, 64), {}),
    ("higgins_mlp", (3, 28, 20), {"hidden": 32}),
    ("higgins-mlp", (1, 64, 64), {"hidden": 16}),
    ("near32_conv", (1, 32, 32), {"depth": 3, "width": 4}),
    ("conv", (3, 128, 128), {"depth": 4, "width": 4, "batch_norm": False}),
    ("near32_conv", (3, 256, 256), {"depth": 5, "width": 4}),
    ("near32_conv", (3, 256, 256), {"depth": 3, "width": 4}),
    ("xys256", (3, 256, 256), {}),
    ("antixk64", (3, 64, 64), {}),
    ("ugvae_fc28", (1, 28, 28), {}),
    ("mlp28", (3, 28, 28), {}),
    ("ugvae_conv64", (3, 64, 64), {}),
]


@pytest.mark.parametrize("name,shape,opts", SHAPES)
def test_output_shapes(name, shape, opts):
    d = 5
    enc, dec = build_net(name, shape, d, opts)
    enc.eval(), dec.eval()
    with torch.no_grad():
        h = enc(torch.rand(2, *shape))
        o = dec(torch.randn(2, d))
    assert h.shape == (2, 2 * d)
    assert o.shape == (2, *shape)
    assert torch.isfinite(h).all() and torch.isfinite(o).all()


def test_near32_computes_flatten_and_last_kernel():
    enc, dec = build_net("near32_conv", (1, 64, 64), 10, {"depth": 3, "width": 32})
    flat = [m for m in enc if isinstance(m, torch.nn.Linear)][0]
    assert flat.in_features == 8192
    last = [m for m in dec if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    assert last.kernel_size == (33, 33) and last.out_channels == 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in
                   build_net("conv", (1, 64, 64), 10, {"batch_norm": False})[0])
    slopes = {m.negative_slope for m in enc if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.05}


@pytest.mark.parametrize("name", ["burgess64", "burgess64_keras", "fvae64", "betavae_h", "dlib_conv", "antixk64",
                                  "ugvae_conv64"])
def test_64_only_nets_reject_other_sizes(name):
    with pytest.raises(VaelabError) as e:
        build_net(name, (1, 28, 28), 10)
    msg = str(e.value)
    assert "\n" not in msg and "64×64" in msg and "1×28×28" in msg


def test_other_size_errors():
    with pytest.raises(VaelabError):
        build_net("xys256", (3, 64, 64), 10)
    with pytest.raises(VaelabError):
        build_net("ugvae_fc28", (1, 64, 64), 10)
    with pytest.raises(VaelabError, match="multiple of 32"):
        build_net("near32_conv", (1, 48, 48), 10, {"depth": 5})
    with pytest.raises(VaelabError, match="at least 32"):
        build_net("near32_conv", (1, 16, 16), 10, {"depth": 3})


def test_names_and_options():
    assert canonical_net("burgess") == "burgess64"
    assert canonical_net("factorvae-conv") == "fvae64"
    assert canonical_net("betavae-h") == "betavae_h"
    assert canonical_net("higgins-mlp") == "higgins_mlp"
    assert canonical_net("conv") == "near32_conv"
    assert canonical_net("mlp28") == "ugvae_fc28"
    assert set(NET_ALIASES.values()) <= set(NETS)
    with pytest.raises(VaelabError, match="did you mean 'burgess64'"):
        canonical_net("burgess65")
    with pytest.raises(VaelabError, match="did you mean 'depth'"):
        build_net("near32_conv", (1, 64, 64), 10, {"deph": 3})
    with pytest.raises(VaelabError, match="latent_dim"):
        build_net("burgess64", (1, 64, 64), 0)


def test_initialisation():
    enc, dec = build_net("fvae64", (1, 64, 64), 10)
    conv = enc[2]
    assert abs(conv.weight.std().item() - 0.02) < 0.002 and conv.bias.detach().abs().max().item() == 0.0
    enc, dec = build_net("burgess64", (1, 64, 64), 10)
    lin = enc[9]  # Lin(512→256), Kaiming normal: std √(2/512)
    assert isinstance(lin, torch.nn.Linear) and lin.in_features == 512
    assert abs(lin.weight.std().item() - math.sqrt(2 / 512)) < 0.005 and lin.bias.detach().abs().max().item() == 0.0
    enc, dec = build_net("dlib_conv", (1, 64, 64), 10)
    convt = dec[5]  # ConvT(64→64, 4): Glorot bound √(6/(16·64 + 16·64))
    assert isinstance(convt, torch.nn.ConvTranspose2d)
    bound = math.sqrt(6 / (2 * 16 * 64))
    assert convt.weight.abs().max().item() <= bound and convt.bias.detach().abs().max().item() == 0.0


def test_betavae_h_is_fvae64_f256_with_dense_layers_and_kaiming_init():
    """docs/nets.md#betavae_h: BetaVAE_H = the fvae64 stack at F 256 with Lin in place of the two 1×1 convolutions.
    Copying fvae64's weights into it (1×1 kernels reshaped to dense matrices) gives the same outputs."""
    torch.manual_seed(0)
    enc, dec = build_net("betavae_h", (3, 64, 64), 10)
    assert isinstance(enc[-1], torch.nn.Linear) and (enc[-1].in_features, enc[-1].out_features) == (256, 20)
    assert isinstance(dec[0], torch.nn.Linear) and (dec[0].in_features, dec[0].out_features) == (10, 256)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in (*enc, *dec))
    # Kaiming normal (fan_in, gain √2) + zero bias on Conv2d / Linear (1Konny kaiming_init)
    conv5 = enc[8]  # Conv(64→256, 4): fan_in 1,024
    assert isinstance(conv5, torch.nn.Conv2d) and conv5.out_channels == 256
    assert abs(conv5.weight.std().item() - math.sqrt(2 / 1024)) < 0.002
    assert conv5.bias.detach().abs().max().item() == 0.0
    assert abs(dec[0].weight.std().item() - math.sqrt(2 / 10)) < 0.05 and dec[0].bias.detach().abs().max().item() == 0.0
    # ConvTranspose2d keeps PyTorch's default init (1Konny's kaiming_init skips it): nonzero uniform biases
    convts = [m for m in dec if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convts) == 5 and all(m.bias.detach().abs().max().item() > 0 for m in convts)

    f_enc, f_dec = build_net("fvae64", (3, 64, 64), 10)
    with torch.no_grad():
        for a, b in zip([m for m in enc if not isinstance(m, torch.nn.Linear)], f_enc):
            if isinstance(a, torch.nn.Conv2d):
                a.weight.copy_(b.weight), a.bias.copy_(b.bias)
        enc[-1].weight.copy_(f_enc[10].weight.flatten(1)), enc[-1].bias.copy_(f_enc[10].bias)
        dec[0].weight.copy_(f_dec[1].weight.flatten(1)), dec[0].bias.copy_(f_dec[1].bias)
        for a, b in zip([m for m in dec if isinstance(m, torch.nn.ConvTranspose2d)],
                        [m for m in f_dec if isinstance(m, torch.nn.ConvTranspose2d)]):
            a.weight.copy_(b.weight), a.bias.copy_(b.bias)
        x, z = torch.rand(2, 3, 64, 64), torch.randn(2, 10)
        torch.testing.assert_close(enc(x), f_enc(x))
        torch.testing.assert_close(dec(z), f_dec(z))


def test_burgess64_keras_layers_and_modes():
    """Knight13/beta-VAE-disentanglement's Keras variant: BN after every conv / hidden dense, Dense(2D) before the heads, 1×1×512 ->
    "valid" ConvT to 4×4, input shifted by −0.5, no squashing on the output (the likelihood's sigmoid)."""
    torch.manual_seed(0)
    enc, dec = build_net("burgess64_keras", (1, 64, 64), 10)
    bn2 = [m for m in (*enc.modules(), *dec.modules()) if isinstance(m, torch.nn.BatchNorm2d)]
    bn1 = [m for m in (*enc.modules(), *dec.modules()) if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bn2) == 4 + 4 and len(bn1) == 2 + 3  # 4 convs, 4 ConvT; 2 encoder + 3 decoder denses
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in bn1 + bn2)  # Keras defaults
    lin = [m for m in enc.trunk if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(512, 256), (256, 256), (256, 20)]
    assert enc.mu.in_features == 20 and enc.logvar.in_features == 20 and enc.mu.out_features == 10
    first_t = next(m for m in dec if isinstance(m, torch.nn.ConvTranspose2d))
    assert first_t.in_channels == 512 and first_t.padding == (0, 0)
    assert not isinstance(list(dec)[-1], (torch.nn.Tanh, torch.nn.Sigmoid))
    # Glorot-uniform (Keras default) on Lin(512→256), zero bias
    bound = math.sqrt(6 / (512 + 256))
    assert lin[0].weight.abs().max().item() <= bound and lin[0].bias.detach().abs().max().item() == 0.0
    # the −0.5 shift: a grey image (0.5) reaches the first conv as zeros, so its output is the (zero) bias
    x = torch.full((2, 1, 64, 64), 0.5)
    assert enc.trunk[1](enc.trunk[0](x)).abs().max().item() == 0.0
    # train mode uses batch statistics, eval mode the running ones: different outputs for the same batch
    x = torch.rand(8, 1, 64, 64)
    enc.train()
    h_train = enc(x)
    enc.eval()
    with torch.no_grad():
        h_eval, h_eval1 = enc(x), enc(x[:1])
    assert not torch.allclose(h_train, h_eval)
    torch.testing.assert_close(h_eval[:1], h_eval1)  # eval: an image's code does not depend on its batch


@pytest.mark.parametrize("objective", ["betavae", "annealedvae"])
def test_burgess64_keras_trains_in_a_model(objective):
    from vaelab.models import build_model

    torch.manual_seed(0)
    m = build_model({"objective": objective, "net": "burgess64_keras", "latent_dim": 6,
                     "likelihood": "gaussian", "variance": 0.5}, (3, 64, 64), 100)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x = torch.rand(4, 3, 64, 64)
    m.train()
    terms = m.update(x, 0, {"vae": opt})
    assert torch.isfinite(terms["loss"]) and terms["kl_per_dim"].shape == (6,)
    bn = next(b for b in m.encoder.modules() if isinstance(b, torch.nn.BatchNorm2d))
    assert bn.num_batches_tracked.item() == 1 and bn.running_mean.abs().sum().item() > 0
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    m.eval()
    with torch.no_grad():
        mean = m.reconstruct(x)
    assert mean.shape == x.shape and mean.min().item() >= 0 and mean.max().item() <= 1
