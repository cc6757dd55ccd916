"""The scattering transform: shape, filters, agreement with a direct convolution, invariance.

Properties that a wrong transform would fail: every expected value below is computed
independently of the FFT code path (spatial sums, the filters' own definition).
"""

import math

import numpy as np
import pytest
import torch

from fedpriv.tasks.scattering import (
    Scattering2D,
    gabor_2d,
    morlet_2d,
    num_channels,
    periodize_fourier,
)


@pytest.fixture(scope="module")
def scattering():
    return Scattering2D((28, 28), J=2, L=8)


def _s(transform, images):
    return transform(torch.tensor(images, dtype=torch.float32)).double().numpy()


def _pad(images):  # the transform's reflect padding, 28 -> 36
    return np.pad(images, [(0, 0)] * (images.ndim - 2) + [(4, 4), (4, 4)], mode="reflect")


def _blobs(rng, n):
    """Smooth objects on a zero background, away from the border."""
    out = np.zeros((n, 28, 28))
    for i in range(n):
        patch = rng.random((12, 12))
        patch = (patch + np.roll(patch, 1, 0) + np.roll(patch, 1, 1)
                 + np.roll(patch, (1, 1), (0, 1))) / 4  # a 2x2 box blur
        out[i, 8:20, 8:20] = patch
    return out


def test_j2_l8_gives_81_channels_of_7x7_for_28x28_images(scattering):
    assert num_channels(2, 8) == 81 and num_channels(3, 8) == 1 + 24 + 192
    x = torch.rand(3, 28, 28)
    out = scattering(x)
    assert out.shape == (3, 81, 7, 7) and scattering.out_shape == (81, 7, 7)
    assert torch.equal(scattering(x[:, None]), out)  # (B, 1, 28, 28) is the same image
    with pytest.raises(ValueError, match="expected images of"):
        scattering(torch.rand(2, 27, 28))
    with pytest.raises(ValueError, match="divisible"):
        Scattering2D((30, 30), J=2)


def test_the_filters_are_buffers_not_state(scattering):
    assert list(scattering.parameters()) == [] and scattering.state_dict() == {}


def test_a_second_transform_reuses_the_filters_but_owns_its_buffers(scattering):
    """Filters are built once per process; each module gets copies it may move or alter."""
    other = Scattering2D((28, 28), J=2, L=8)
    mine = dict(scattering.named_buffers())
    theirs = dict(other.named_buffers())
    assert list(mine) == list(theirs)
    for name, buf in theirs.items():
        assert torch.equal(buf, mine[name]) and buf.data_ptr() != mine[name].data_ptr()
    other.phi_0.zero_()  # a caller's change stays in that module
    assert Scattering2D((28, 28), J=2, L=8).phi_0.abs().sum() > 0


def test_wavelets_have_zero_mean_and_the_low_pass_unit_mass():
    for j, theta in [(0, 0.0), (1, math.pi / 8), (1, -3 * math.pi / 8)]:
        psi = morlet_2d(36, 36, 0.8 * 2 ** j, theta, 3 * math.pi / 4 / 2 ** j, 0.5)
        psi_hat = np.fft.fft2(psi)
        assert abs(psi.sum()) < 1e-12  # psi_hat(0) = 0: a band-pass filter
        assert np.abs(psi_hat).max() > 0.5
        assert np.abs(psi_hat.imag).max() < 1e-10  # real in Fourier, as the bank assumes
    phi = gabor_2d(36, 36, 1.6, 0.0, 0.0)
    assert np.fft.fft2(phi)[0, 0].real == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("j", [0, 1])
@pytest.mark.parametrize("t", [0, 2, 5])
def test_each_wavelet_peaks_at_its_scale_and_angle_in_fourier(j, t):
    # psi_(j, theta) is centred on the frequency xi_j (cos theta, sin theta), xi_j =
    # 3 pi / (4 * 2^j) radians per pixel, with theta = (L/2 - 1 - t) pi / L.
    M = 64  # a finer grid than 36 so the peak is resolved to a bin of 2 pi / 64
    theta = (3 - t) * math.pi / 8
    xi = 3 * math.pi / 4 / 2 ** j
    psi_hat = np.real(np.fft.fft2(morlet_2d(M, M, 0.8 * 2 ** j, theta, xi, 0.5)))
    k = np.unravel_index(np.argmax(psi_hat), psi_hat.shape)
    freq = np.array([f if f < M / 2 else f - M for f in k]) * 2 * math.pi / M
    expected = xi * np.array([math.cos(theta), math.sin(theta)])
    assert np.linalg.norm(freq - expected) <= 2 * math.pi / M * 1.5


def test_periodizing_a_filter_folds_its_spectrum_onto_the_coarse_grid():
    # res 1: the Nyquist band of the half-size grid is cut, then the four quarters summed.
    x_hat = np.arange(16.0).reshape(4, 4)
    kept = x_hat.copy()
    kept[1:3, :] = 0
    kept[:, 1:3] = 0
    expected = kept[:2, :2] + kept[2:, :2] + kept[:2, 2:] + kept[2:, 2:]
    np.testing.assert_array_equal(periodize_fourier(x_hat, 1), expected)
    np.testing.assert_array_equal(periodize_fourier(x_hat, 0), x_hat)


def test_littlewood_paley_sum_is_at_most_one(scattering):
    # A(w) = |phi(w)|^2 + 1/2 sum_l (|psi_l(w)|^2 + |psi_l(-w)|^2) <= 1: one wavelet layer
    # of a real image keeps at most its energy (Mallat 2012, Proposition 2.1).
    phi = scattering.phi_0.real.double().numpy() * 16  # the 1/4^J the filter carries
    bank = np.concatenate([scattering.psi_0_0.real.double().numpy(),
                           scattering.psi_1_0.real.double().numpy() * 4])
    mirrored = np.roll(np.flip(bank, (1, 2)), (1, 1), (1, 2))  # psi(-w) on the DFT grid
    lp = phi ** 2 + 0.5 * ((bank ** 2).sum(0) + (mirrored ** 2).sum(0))
    assert lp.max() <= 1 + 1e-6
    assert lp.max() > 0.99 and lp[0, 0] == pytest.approx(1.0, abs=1e-3)


def test_the_scattering_is_non_expansive(scattering):
    # ||Sx - Sy|| <= ||x - y|| (Mallat 2012, Proposition 2.5, from A <= 1). The outputs
    # are sampled every 2^J pixels, so their energy counts 4^J times.
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 28, 28)), _blobs(rng, 6)
    d = _s(scattering, x) - _s(scattering, y)
    lhs = 4 ** 2 * (d ** 2).sum(axis=(1, 2, 3))
    rhs = ((_pad(x) - _pad(y)) ** 2).sum(axis=(1, 2))
    assert (lhs <= rhs).all()


def _circular(x, f):
    """sum_m f[m] x[n - m] on the periodic grid, in space: no FFT."""
    out = np.zeros(x.shape, complex)
    for a in range(x.shape[0]):
        for b in range(x.shape[1]):
            out += f[a, b] * np.roll(x, (a, b), axis=(0, 1))
    return out


def test_orders_0_and_1_equal_direct_spatial_convolutions(scattering):
    # S0 x = (x * phi)(4u) and S1 x = (|x * psi| * phi)(4u) on the reflect-padded grid,
    # border block dropped: computed here by explicit circular sums in space.
    img = np.random.default_rng(1).random((28, 28))
    out = _s(scattering, img[None])[0]
    padded = _pad(img)
    phi = gabor_2d(36, 36, 1.6, 0.0, 0.0)
    s0 = _circular(padded, phi).real[::4, ::4][1:-1, 1:-1]
    np.testing.assert_allclose(out[0], s0, atol=1e-5 * np.abs(s0).max())
    for t in (0, 5):  # j1 = 0, two angles: channels 1 + t
        psi = morlet_2d(36, 36, 0.8, (3 - t) * math.pi / 8, 3 * math.pi / 4, 0.5)
        s1 = _circular(np.abs(_circular(padded, psi)), phi).real[::4, ::4][1:-1, 1:-1]
        np.testing.assert_allclose(out[1 + t], s1, atol=1e-5 * np.abs(s1).max())


def test_order_1_and_2_coefficients_are_nonnegative_averages_of_moduli(scattering):
    out = _s(scattering, np.random.default_rng(2).random((4, 28, 28)))
    assert out[:, 1:].min() > 0


def test_orders_0_and_1_barely_move_under_a_one_pixel_shift(scattering):
    # Invariance to translations small against 2^J = 4 pixels (Bruna & Mallat 2013,
    # Section 2.1), against the non-invariant baseline, the pixels themselves.
    rng = np.random.default_rng(3)
    x = _blobs(rng, 12)
    shifted = np.roll(x, 1, axis=2)
    a, b = _s(scattering, x)[:, :17], _s(scattering, shifted)[:, :17]
    rel_s = np.linalg.norm((a - b).reshape(12, -1), axis=1) / np.linalg.norm(
        a.reshape(12, -1), axis=1)
    rel_x = np.linalg.norm((x - shifted).reshape(12, -1), axis=1) / np.linalg.norm(
        x.reshape(12, -1), axis=1)
    assert (rel_s < 0.75 * rel_x).all(), (rel_s, rel_x)
    assert rel_s.mean() < 0.6 * rel_x.mean()
