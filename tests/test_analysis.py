"""The derivative engine: finite differences converge to the exact JVP values, the isometry Gram
matches J^T G J from an explicit Jacobian (and the SSIM Hessian), chunking changes nothing."""

import pytest
import torch
from torch import nn

from vaeiso_ext import metrics, reference
from vaeiso_ext import nn as vnn
from vaeiso_ext.analysis import derivatives, dj_prime, isometry_gram

N_LATENT = 3
SSIM_KW = dict(window_size=7, sigma=1.5)


def mlp_decoder(seed=0, out=16, sigmoid=False):
    """The toy decoder's shape (FC-tanh-FC-tanh-FC), small."""
    torch.manual_seed(seed)
    layers = [nn.Linear(N_LATENT, 24), nn.Tanh(), nn.Linear(24, 32), nn.Tanh(), nn.Linear(32, out)]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else [])).double().eval()


def conv_decoder(seed=0):
    """FC - reshape - 2 x (ConvT s2, IGDN) - sigmoid: (N, 3) -> (N, 3, 8, 8) in (0, 1)."""
    torch.manual_seed(seed)
    dec = (
        nn.Sequential(
            nn.Linear(N_LATENT, 4 * 2 * 2),
            nn.Softplus(),
            nn.Unflatten(1, (4, 2, 2)),
            nn.ConvTranspose2d(4, 4, 5, stride=2, padding=2, output_padding=1),
            vnn.IGDN(4),
            nn.ConvTranspose2d(4, 3, 5, stride=2, padding=2, output_padding=1),
            vnn.IGDN(3),
            nn.Sigmoid(),
        )
        .double()
        .eval()
    )
    with torch.no_grad():  # non-identity GDN parameters (a diagonal gamma hides transpose bugs)
        for m in dec.modules():
            if isinstance(m, vnn.GDN):
                C = m.beta.numel()
                m.beta.copy_(m.beta_reparam.init(0.5 + torch.rand(C)))
                m.gamma.copy_(m.gamma_reparam.init(0.2 * torch.rand(C, C)))
    return dec


def latents(N=4, seed=1):
    return torch.randn(N, N_LATENT, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


CASES = [
    ("mlp", metrics.SSE),
    ("mlp", metrics.DownwardConvex),
    ("mlp", metrics.UpwardConvex),
    ("mlp-sigmoid", metrics.BCE),
    ("conv", metrics.SSE),
    ("conv", metrics.BCE),
]


def make(kind):
    return conv_decoder() if kind == "conv" else mlp_decoder(sigmoid=kind == "mlp-sigmoid")


def rel_err(a, b):
    return ((a - b) / b).abs().max().item()


@pytest.mark.parametrize("kind,cls", CASES)
def test_finite_differences_converge_to_jvp(kind, cls):
    dec, z, m = make(kind), latents(), cls()
    exact = dj_prime(dec, z, m, method="jvp")
    assert exact.shape == z.shape and (exact > 0).all()
    fwd = [rel_err(dj_prime(dec, z, m, eps=e, method="forward"), exact) for e in (1e-2, 1e-3)]
    cen = [rel_err(dj_prime(dec, z, m, eps=e, method="central"), exact) for e in (1e-2, 1e-3)]
    assert fwd[1] < fwd[0] / 5, fwd  # first order
    assert cen[1] < cen[0] / 50, cen  # second order
    assert cen[0] < fwd[0] and cen[1] < fwd[1]
    assert cen[1] < 1e-5 and fwd[1] < 2e-2


def jacobians(dec, z):
    """Per-sample Jacobians (N, L, n) from torch.autograd.functional.jacobian (reverse mode).

    Rows of a batch are independent, so the Jacobian of the batch sum holds them all.
    """
    jac = torch.autograd.functional.jacobian(lambda zz: dec(zz).sum(0), z)  # (*S, N, n)
    return jac.reshape(-1, z.shape[0], z.shape[1]).transpose(0, 1)


def metric_diag(m, x):
    xs = x.flatten(1)
    if isinstance(m, metrics.BCE):
        return 1 / (2 * xs * (1 - xs))
    return m.scale(x)[:, None].expand_as(xs)


@pytest.mark.parametrize("kind,cls", CASES)
def test_isometry_gram_matches_explicit_jacobian(kind, cls):
    dec, z, m = make(kind), latents(), cls()
    sigma, beta = 0.1 + torch.rand_like(z), 0.05
    gram = isometry_gram(dec, z, sigma, m, beta)
    assert gram.shape == (4, N_LATENT, N_LATENT)
    J = jacobians(dec, z)
    with torch.no_grad():
        G = metric_diag(m, dec(z))
    want = (2 / beta) * sigma[:, :, None] * sigma[:, None, :] * torch.einsum("nlj,nl,nlk->njk", J, G, J)
    # Sums over the decoder's outputs in another order; off-diagonal entries may cancel, so the
    # floor is relative to the largest entry (bound: outputs * 2**-53 of the magnitudes, < 1e-13).
    torch.testing.assert_close(gram, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())
    # its diagonal is the Eq. 20 norm with the exact D'_j (sums of non-negative terms)
    exact = dj_prime(dec, z, m, method="jvp")
    torch.testing.assert_close(gram.diagonal(dim1=1, dim2=2), (2 / beta) * sigma**2 * exact, rtol=1e-10, atol=0)


def test_ssim_gram_matches_hessian_oracle():
    """SSIM: Gamma = (2/beta) s s J^T G J with G = 1/2 the Hessian of 1 - SSIM (hvp oracle)."""
    dec, z, m = conv_decoder(), latents(3), metrics.SSIM(**SSIM_KW)
    sigma, beta = 0.1 + torch.rand_like(z), 0.01
    gram = isometry_gram(dec, z, sigma, m, beta)
    J = jacobians(dec, z).transpose(1, 2).reshape((3, N_LATENT, 3, 8, 8))
    with torch.no_grad():
        x = dec(z)
    f = lambda y: (1 - reference.ssim(x, y, **SSIM_KW)).sum()  # noqa: E731
    hj = torch.stack([torch.autograd.functional.hvp(f, x, J[:, j])[1] for j in range(N_LATENT)], 1)
    jgj = 0.5 * torch.einsum("njl,nkl->njk", hj.flatten(2), J.flatten(2))
    want = (2 / beta) * sigma[:, :, None] * sigma[:, None, :] * jgj
    torch.testing.assert_close(gram, want, rtol=1e-7, atol=1e-10 * want.abs().max().item())
    exact = dj_prime(dec, z, m, method="jvp")
    torch.testing.assert_close(exact, jgj.diagonal(dim1=1, dim2=2), rtol=1e-7, atol=0)
    cen = dj_prime(dec, z, m, eps=1e-3, method="central")
    fwd = dj_prime(dec, z, m, eps=1e-3, method="forward")
    assert rel_err(cen, exact) < 1e-4 and rel_err(cen, exact) < rel_err(fwd, exact) < 5e-2


def chunking_rtol(method):
    """Decoder batches of another size may round each float64 output differently by a few ulp
    (BLAS blocking). A finite difference divides that by eps = 1e-3 and by |J| (>~1e-2 here):
    ~10 ulp * 1e-16 / 1e-5 = 1e-10 relative in D'_j; jvp has no eps, so only the ulps remain."""
    return 1e-8 if method in ("forward", "central") else 1e-11


@pytest.mark.parametrize("method", ["forward", "central", "jvp"])
def test_chunk_size_does_not_matter(method, monkeypatch):
    dec, z, m = conv_decoder(), latents(5), metrics.BCE()
    whole = dj_prime(dec, z, m, method=method, chunk_size=1000)
    tol = dict(rtol=chunking_rtol(method), atol=0)
    for c in (1, 2, 7, 100):  # rows per decoder call; a sample's rows span calls when small
        torch.testing.assert_close(dj_prime(dec, z, m, method=method, chunk_size=c), whole, **tol)
    torch.testing.assert_close(dj_prime(dec, z, m, method=method), whole, **tol)
    # the default rules at their extremes: one row per call, one sample per distance call
    monkeypatch.setattr(derivatives, "DECODE_BUDGET_BYTES", {"cpu": 1})
    monkeypatch.setattr(derivatives, "MEMORY_BUDGET_BYTES", 1)
    torch.testing.assert_close(dj_prime(dec, z, m, method=method), whole, **tol)
    sigma = torch.rand_like(z)
    gram = isometry_gram(dec, z, sigma, m, 0.1, chunk_size=1000)  # jvp-based: no eps
    torch.testing.assert_close(
        isometry_gram(dec, z, sigma, m, 0.1, chunk_size=3), gram, rtol=1e-10, atol=1e-10 * gram.abs().max().item()
    )


def test_batches_decodes_and_distances(monkeypatch):
    """Decoder calls of chunk_size rows; one metric.pairs call per chunk of samples for all
    K = 2n others (the point of the engine)."""
    calls = {"decoder": [], "pairs": []}
    dec = mlp_decoder()

    def counted_decoder(zz):
        calls["decoder"].append(zz.shape[0])
        return dec(zz)

    class Counted(metrics.SSE):
        def pairs(self, base, others):
            calls["pairs"].append(tuple(others.shape[:2]))
            return super().pairs(base, others)

    z = latents(6)
    dj_prime(counted_decoder, z, Counted(), method="central")
    assert calls == {"decoder": [1, 6 * 7], "pairs": [(6, 6)]}  # a one-row probe, then one batch
    calls = {"decoder": [], "pairs": []}
    dj_prime(counted_decoder, z, Counted(), method="central", chunk_size=16)
    assert calls == {"decoder": [1, 16, 16, 10], "pairs": [(6, 6)]}
    calls = {"decoder": [], "pairs": []}
    monkeypatch.setattr(derivatives, "MEMORY_BUDGET_BYTES", 4 * 7 * 16 * 8)  # 4 samples' outputs
    dj_prime(counted_decoder, z, Counted(), method="central")
    assert calls == {"decoder": [1, 4 * 7, 2 * 7], "pairs": [(4, 6), (2, 6)]}


def test_probe_measures_the_largest_activation():
    assert derivatives._probe(mlp_decoder(), latents()) == (16 * 8, 32 * 8)  # float64: out 16, hidden 32
    assert derivatives._probe(conv_decoder(), latents()) == (3 * 8 * 8 * 8,) * 2
    assert derivatives._probe(lambda zz: zz.repeat(1, 5), latents()) == (15 * 8, 15 * 8)


def test_float32_decoder():
    dec64, z = conv_decoder(), latents()
    dec32 = conv_decoder().float()
    for m in (metrics.SSE(), metrics.BCE()):
        exact = dj_prime(dec64, z, m, method="jvp")
        got = dj_prime(dec32, z.float(), m, method="jvp")
        assert got.dtype == torch.float32
        assert rel_err(got.double(), exact) < 1e-4
        # float32 finite differences: eps = 1e-2 balances truncation and round-off here
        assert rel_err(dj_prime(dec32, z.float(), m, eps=1e-2, method="central").double(), exact) < 1e-2


def test_no_graph_and_empty():
    dec, z = mlp_decoder(), latents()
    z.requires_grad_()
    out = dj_prime(dec, z, metrics.SSE(), method="jvp")
    assert not out.requires_grad
    assert dj_prime(dec, z[:0], metrics.SSE()).shape == (0, N_LATENT)
    assert isometry_gram(dec, z[:0], z[:0], metrics.SSE(), 1.0).shape == (0, N_LATENT, N_LATENT)


def test_bad_inputs():
    dec, z, m = mlp_decoder(), latents(), metrics.SSE()
    cases = [
        (lambda: dj_prime(dec, z[0], m), "z: expected a latent batch of shape"),
        (lambda: dj_prime(dec, z.long(), m), "z: expected a floating-point"),
        (lambda: dj_prime(dec, z, m, method="backward"), "method: expected one of"),
        (lambda: dj_prime(dec, z, m, eps=0.0), "eps: expected a positive"),
        (lambda: dj_prime(dec, z, m, eps=float("nan")), "eps: expected a positive"),
        (lambda: dj_prime(dec, z, m, chunk_size=0), "chunk_size: expected a positive int"),
        (lambda: isometry_gram(dec, z, z[:, :2], m, 1.0), "sigma: expected shape"),
        (lambda: isometry_gram(dec, z, z, m, 0.0), "beta: expected a positive"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["forward", "central", "jvp"])
def test_cuda_matches_cpu(method):
    dec, z = conv_decoder(), latents()
    for m in (metrics.SSE(), metrics.DownwardConvex(), metrics.BCE()):
        cpu = dj_prime(dec, z, m, method=method)
        cuda = dj_prime(dec.cuda(), z.cuda(), m, method=method)
        dec.cpu()
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=chunking_rtol(method), atol=0)  # as for chunking
