"""App. F.2 (``reproduce images --preset f2``): the network against the paper's list of layers,
its parameter count from the paper's shapes, the preset's values, runs recorded before ``--hidden``
and a smoke run."""

import json

import torch
from torch import nn

from vaeiso_ext.models import ConvVAE, build_model
from vaeiso_ext.nn import GDN, IGDN

# App. F.2 as the paper lists it (at 64x64): (kernel, stride, out channels) of each conv layer,
# (in, out) of each FC layer.
ENC_CONVS = [(9, 2, 64), (5, 2, 64), (5, 2, 64), (5, 2, 64)]
DEC_CONVS = [(5, 2, 64), (5, 2, 64), (5, 2, 64), (9, 2, 3)]
ENC_FC, MU_SIGMA = (1024, 2048), (2048, 256)
DEC_FCS = [(256, 2048), (2048, 1024)]


def _f2():
    return ConvVAE(latent=256, image_size=64, hidden=2048)


def _convs(seq, cls):
    return [m for m in seq if isinstance(m, cls)]


def test_f2_layers_are_the_papers():
    m = _f2()
    enc = list(m.encoder)
    # encoder: CNN(9,9,2,64,GDN) - CNN(5,5,2,64,GDN) x3 - FC(1024,2048,softplus)
    convs = _convs(enc, nn.Conv2d)
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((k, k), (s, s), o) for k, s, o in ENC_CONVS]
    assert [c.in_channels for c in convs] == [3, 64, 64, 64]
    for c in convs:  # each conv followed by a GDN (not IGDN) of its channels
        g = enc[enc.index(c) + 1]
        assert type(g) is GDN and g.beta.numel() == c.out_channels
    fcs = _convs(enc, nn.Linear)
    assert [(f.in_features, f.out_features) for f in fcs] == [ENC_FC]
    assert isinstance(enc[enc.index(fcs[0]) + 1], nn.Softplus) and enc[-1] is enc[enc.index(fcs[0]) + 1]
    # FC(2048, 256) x2 for mu and sigma, no activation
    assert (m.mu.in_features, m.mu.out_features) == MU_SIGMA
    assert (m.logvar.in_features, m.logvar.out_features) == MU_SIGMA
    # decoder: FC(256,2048,softplus) - FC(2048,1024,softplus) - CNN(5,5,2,64,IGDN) x3 - CNN(9,9,2,3,IGDN)
    dec = list(m.decoder)
    fcs = _convs(dec, nn.Linear)
    assert [(f.in_features, f.out_features) for f in fcs] == DEC_FCS
    for f in fcs:
        assert isinstance(dec[dec.index(f) + 1], nn.Softplus)
    convs = _convs(dec, nn.ConvTranspose2d)
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((k, k), (s, s), o) for k, s, o in DEC_CONVS]
    for c in convs:
        g = dec[dec.index(c) + 1]
        assert type(g) is IGDN and g.beta.numel() == c.out_channels
    assert dec[-1] is dec[dec.index(convs[-1]) + 1]
    # the image goes through at the paper's 64x64
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (2, 256)
    assert m.decoder(torch.zeros(2, 256)).shape == (2, 3, 64, 64)


def test_f2_parameter_count_from_the_papers_shapes():
    # counted from the paper's list alone: conv k*k*in*out + out, GDN/IGDN beta (C) + gamma (C x C),
    # FC in*out + out
    def conv(k, i, o):
        return k * k * i * o + o + o + o * o

    def fc(i, o):
        return i * o + o

    enc = conv(9, 3, 64) + 3 * conv(5, 64, 64) + fc(1024, 2048) + 2 * fc(2048, 256)
    dec = fc(256, 2048) + fc(2048, 1024) + 3 * conv(5, 64, 64) + conv(9, 64, 3)
    assert sum(p.numel() for p in _f2().parameters()) == enc + dec


def test_f2_preset_sets_exactly_the_papers_values():
    from vaeiso_ext.cli import _parser
    from vaeiso_ext.experiments.images import EXPERIMENT as IMAGES
    from vaeiso_ext.experiments.images import ImagesConfig

    def config(argv):
        args, extra = _parser().parse_known_args(["reproduce", "images", *argv])
        assert not extra
        return args.exp.config_from_args(args)

    f2 = config(["--preset", "f2"])
    assert (f2.size, f2.latent, f2.lam, f2.hidden) == (64, 256, 10000.0, 2048)
    # everything else stays the default
    base = ImagesConfig()
    changed = {k for k, v in vars(f2).items() if v != getattr(base, k)}
    assert changed == {"latent", "lam", "hidden"}
    assert config(["--preset", "f2", "--hidden", "512"]).hidden == 512
    assert config([]).hidden == 1024  # App. D.2
    # the model it builds is F.2's
    m = IMAGES.new_model(f2)
    assert (m.config["latent"], m.config["hidden"], m.config["image_size"]) == (256, 2048, 64)
    # the paper's results shown: F.2's for F.2's configuration, D.2's otherwise
    assert "1.25" in IMAGES.paper_for(f2)["conventional"] and "0.95" in IMAGES.paper_for(f2)["decomposed"]
    assert IMAGES.paper_for(base) == IMAGES.paper and "1.83" in IMAGES.paper["conventional"]


def test_cpu_scale_64x64_presets():
    # docs/image_results.md: cpu64 is the cpu preset's optimiser settings at the paper's 64x64
    # with the D.2 network; f2-cpu is the same protocol with F.2's network, latents and lambda
    from vaeiso_ext.cli import _parser
    from vaeiso_ext.experiments.images import EXPERIMENT as IMAGES
    from vaeiso_ext.experiments.images import ImagesConfig

    def config(argv):
        args, extra = _parser().parse_known_args(["reproduce", "images", *argv])
        assert not extra
        return args.exp.config_from_args(args)

    keys = ("size", "batch_size", "lr", "warmup", "lr_drop_at", "lr_drop", "iterations", "eval_every", "init")
    want = (64, 32, 1e-4, 50, 2800, 0.3, 3500, 500, "scaled")
    c64, f2 = config(["--preset", "cpu64"]), config(["--preset", "f2-cpu", "--decomposed"])
    assert tuple(getattr(c64, k) for k in keys) == tuple(getattr(f2, k) for k in keys) == want
    # cpu64 keeps the D.2 network and lambda; f2-cpu takes F.2's
    base = ImagesConfig()
    assert (c64.latent, c64.hidden, c64.lam) == (base.latent, base.hidden, base.lam) == (32, 1024, 1000.0)
    assert (f2.latent, f2.hidden, f2.lam, f2.decomposed) == (256, 2048, 10000.0, True)
    assert (c64.curve_samples, c64.n_eval, f2.curve_samples, f2.n_eval) == (32, 128, 16, 64)
    # the paper's figures a run is put beside: D.2's for cpu64, F.2's for f2-cpu
    assert IMAGES.paper_for(c64) == IMAGES.paper
    assert "0.95" in IMAGES.paper_for(f2)["decomposed"] and "1.25" in IMAGES.paper_for(f2)["conventional"]
    # explicit options still win
    assert config(["--preset", "f2-cpu", "--iterations", "10"]).iterations == 10


def test_runs_recorded_before_hidden_read_as_1024():
    from vaeiso_ext.experiments.images import ImagesConfig

    old = ImagesConfig.from_dict(
        {"latent": 32, "lam": 1000.0, "iterations": 100, "batch_size": 32, "warmup": 1000, "init": "scaled"}
    )
    assert old.hidden == 1024
    # a model config without "hidden" rebuilds the D.2 network
    m = build_model({"kind": "conv", "latent": 32, "channels": 64, "image_size": 64, "init": "scaled"})
    assert m.config["hidden"] == 1024 and m.mu.in_features == 1024


def test_f2_preset_smoke_run(tmp_path):
    from vaeiso_ext.cli import main

    out = tmp_path / "f2"
    assert (
        main(
            [
                "reproduce",
                "images",
                "--preset",
                "f2",
                "--iterations",
                "2",
                "--batch-size",
                "2",
                "--n-eval",
                "2",
                "--no-figures",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    c = res["config"]
    assert (c["size"], c["latent"], c["lam"], c["hidden"], c["iterations"]) == (64, 256, 10000.0, 2048, 2)
    assert res["training"]["steps"] == 2 and res["n_samples"] == 2
    assert "1.25" in res["paper"]["conventional"]
