"""The image/digit analysis is independent of how the samples are batched (issue: float32 D'_j
moved by up to 2e-3 relative with chunk_size): it encodes and decodes with a float64 copy of the
model (a float32 encoder alone moves mu by ~1e-6 relative with its batch, and D'_j with it)."""

import pytest
import torch

from vaeiso_ext import metrics
from vaeiso_ext.analysis import analyze_latents, derivatives, dj_prime
from vaeiso_ext.models import ConvVAE, DigitsVAE

# Tolerance. In float64 every decoder output element carries a rounding error of at most
# ~k * 2**-53 relative for the k-term sums of the layers (k <= 5*5*64 = 1600 here, bound
# k * 1.1e-16 ~ 2e-13 of the output's size, O(1)). D'_j divides the squared difference
# Dec(z + h e_j) - Dec(z), of size h * |J| with h = 1e-3 and |J| >= ~1e-2 per unit z for these
# models (their outputs move with z at init), so a differently batched decode moves D'_j by at most
# ~2 * 2e-13 / (1e-3 * 1e-2) = 4e-8 relative. 1e-6 leaves margin; float32 moves it by ~1e-3.
RTOL = 1e-6


def _conv():
    torch.manual_seed(0)
    return ConvVAE(latent=4, channels=8, hidden=32).eval()


def test_conv_dj_float64_independent_of_chunk_size():
    m = _conv()
    dec = __import__("copy").deepcopy(m).double().decode
    z = torch.randn(5, 4, dtype=torch.float64)
    whole = dj_prime(dec, z, metrics.SSIM(), chunk_size=1000)
    assert bool((whole > 0).all())
    for c in (1, 3, 7):
        torch.testing.assert_close(dj_prime(dec, z, metrics.SSIM(), chunk_size=c), whole, rtol=RTOL, atol=0)


@pytest.mark.parametrize("kind", ["conv", "digits"])
def test_analyze_latents_independent_of_batching(kind, monkeypatch):
    if kind == "conv":
        x = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        m, metric, beta = _conv(), metrics.SSIM(), 1e-3
    else:
        torch.manual_seed(0)
        m = DigitsVAE(latent=4, pixels=64, hidden=32).eval()
        x, metric, beta = torch.rand(6, 64, generator=torch.Generator().manual_seed(1)), metrics.BCE(), 0.3
    ref = analyze_latents(m, x, metric, beta, chunk=6, gram=False)
    assert ref["dj_dtype"] == "float64"
    # other sample chunks, and one decoder row per call (a tiny decode budget)
    monkeypatch.setattr(derivatives, "DECODE_BUDGET_BYTES", {"cpu": 1})
    for chunk in (1, 4):
        got = analyze_latents(m, x, metric, beta, chunk=chunk, gram=False)
        for a, b in zip(got["dims"], ref["dims"]):
            assert a["index"] == b["index"]
            torch.testing.assert_close(
                torch.tensor(a["dj_mean"], dtype=torch.float64),
                torch.tensor(b["dj_mean"], dtype=torch.float64),
                rtol=RTOL,
                atol=0,
            )
    # the model itself is left in float32
    assert next(m.parameters()).dtype == torch.float32


def test_digits_step_curve_does_not_depend_on_flushed_denormals():
    """train() flushes denormals to zero. The digits step curve read inf at many points of the
    Fashion-MNIST runs: a float32 decode near the smallest normal float (sigmoid of ~-87) lost
    or kept its value depending on the flush, and the BCE between such decodes became infinite
    or moved by orders of magnitude. It decodes in float64 (denormals from ~1e-308): the same
    point with and without the flush (float32 gives 1.1e-31 and inf here)."""
    from vaeiso_ext.experiments import experiments

    exp = experiments()["digits"]
    torch.manual_seed(0)
    m = DigitsVAE(latent=3, hidden=16).eval()
    with torch.no_grad():  # every pixel's logit near -87.3, moving by ~0.05 per latent step
        last = m.decoder[-2]
        last.weight.mul_(50.0)
        last.bias.copy_(-87.3 + torch.rand(784, generator=torch.Generator().manual_seed(3)) - 0.5)
    x = torch.rand(8, 784, generator=torch.Generator().manual_seed(2))
    cfg = type("Cfg", (), {"lam": 2000.0, "kl_threshold": 0.0, "eps": 1e-3, "decomposed": False})()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        flushed = exp.curve_point(cfg, m, x)
    finally:
        torch.set_flush_denormal(False)
    plain = exp.curve_point(cfg, m, x)
    assert flushed["active_dims"] == plain["active_dims"] == 3
    assert 0 < plain["norm_mean"] < float("inf")
    torch.testing.assert_close(flushed["norm_mean"], plain["norm_mean"], rtol=1e-9, atol=0)
