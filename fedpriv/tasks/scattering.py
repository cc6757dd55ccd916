"""The 2-D scattering transform with Morlet wavelets, in torch: fixed, public features.

Mallat 2012, "Group Invariant Scattering" (CPAM 65(10)), and Bruna & Mallat 2013,
"Invariant Scattering Convolution Networks" (IEEE TPAMI 35(8)), Section 2; the filter
bank and the algorithm are those of Oyallon & Mallat 2015 ("Deep Roto-Translation
Scattering for Object Classification", CVPR) as Kymatio implements them (Andreux et al.
2020, JMLR 21(60), Section 3.2), which is what Tramèr & Boneh 2021 ("Differentially
Private Learning Needs Better Features (or Much More Data)", ICLR, Section 3) feed to a
linear model under DP-SGD. Written here in torch and numpy rather than taken from Kymatio,
whose pins (scipy < 1.15) fight the project's.

With ``J`` scales, ``L`` angles and order 2, an image x of M x N pixels maps to

    S_0 x        = (x * phi_J)(2^J u)                                   1 channel
    S_1 x[l1]    = (|x * psi_l1| * phi_J)(2^J u)                        J L channels
    S_2 x[l1,l2] = (||x * psi_l1| * psi_l2| * phi_J)(2^J u),  j2 > j1   L^2 J(J-1)/2

(Bruna & Mallat 2013, Eq. 6-8): 1 + 16 + 64 = 81 channels of 7 x 7 for 28 x 28 images
with J = 2, L = 8. ``psi_l`` with ``l = (j, theta)`` is a Morlet wavelet dilated by 2^j
and rotated by theta, ``phi_J`` a Gaussian low-pass at scale 2^J. Convolutions are
products in Fourier on a reflect-padded grid; a signal known to be band-limited after
``x * psi_j`` is subsampled by 2^j as it goes (subsampling in space is periodisation in
Fourier), so later layers run on smaller grids.

Nothing here is learned or depends on data: the transform is a public function, so
computing it on private data spends no privacy, and a client may compute it once.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "Scattering2D",
    "gabor_2d",
    "morlet_2d",
    "num_channels",
    "periodize_fourier",
    "scattering_filters",
]


def num_channels(J: int, L: int) -> int:
    """Channels of an order-2 scattering: ``1 + J L + L^2 J (J - 1) / 2``."""
    return 1 + J * L + L * L * J * (J - 1) // 2


def gabor_2d(M: int, N: int, sigma: float, theta: float, xi: float,
             slant: float = 1.0) -> np.ndarray:
    """A Gabor filter on an M x N periodic grid, in space (complex128).

    ``g(u) = exp(-u^T R D R^T u / (2 sigma^2) + i xi (u_1 cos theta + u_2 sin theta))
    / (2 pi sigma^2 / slant)`` with R the rotation by theta and D = diag(1, slant^2)
    (Andreux et al. 2020, Section 3.2), summed over the 5 x 5 nearest periods so that it
    is periodic. With ``xi = 0`` and ``slant = 1`` it is a Gaussian of unit mass (the
    low-pass phi).
    """
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    curv = rot @ np.diag([1.0, slant * slant]) @ rot.T / (2 * sigma * sigma)
    out = np.zeros((M, N), np.complex128)
    for ex in (-2, -1, 0, 1, 2):
        for ey in (-2, -1, 0, 1, 2):
            xx, yy = np.mgrid[ex * M:(ex + 1) * M, ey * N:(ey + 1) * N].astype(np.float64)
            arg = (-(curv[0, 0] * xx * xx + (curv[0, 1] + curv[1, 0]) * xx * yy
                     + curv[1, 1] * yy * yy)
                   + 1j * xi * (xx * c + yy * s))
            out += np.exp(arg)
    return out / (2 * math.pi * sigma * sigma / slant)


def morlet_2d(M: int, N: int, sigma: float, theta: float, xi: float,
              slant: float = 0.5) -> np.ndarray:
    """A Morlet wavelet: a Gabor filter minus the Gaussian that makes its mean zero.

    ``psi = g_xi - K g_0`` with ``K = sum(g_xi) / sum(g_0)``, so ``sum(psi) = 0``: a
    band-pass filter, zero at frequency 0 (Andreux et al. 2020, Section 3.2).
    """
    wave = gabor_2d(M, N, sigma, theta, xi, slant)
    envelope = gabor_2d(M, N, sigma, theta, 0.0, slant)
    return wave - (wave.sum() / envelope.sum()) * envelope


def periodize_fourier(x_hat: np.ndarray, res: int) -> np.ndarray:
    """A filter's DFT for a grid 2^res times coarser, its aliasing bands cut first.

    The frequencies above the coarse grid's Nyquist band are zeroed, then the spectrum
    is folded (summed) onto the ``M / 2^res x N / 2^res`` grid: the filter a signal
    already subsampled by 2^res is convolved with.
    """
    M, N = x_hat.shape
    k = 2 ** res
    if res == 0:
        return x_hat.copy()
    kept = x_hat.copy()
    start_m, len_m = int(M * 2.0 ** (-res - 1)), int(M * (1 - 2.0 ** (-res)))
    start_n, len_n = int(N * 2.0 ** (-res - 1)), int(N * (1 - 2.0 ** (-res)))
    kept[start_m:start_m + len_m, :] = 0
    kept[:, start_n:start_n + len_n] = 0
    return kept.reshape(k, M // k, k, N // k).sum(axis=(0, 2))


def scattering_filters(M: int, N: int, J: int, L: int
                       ) -> tuple[list[np.ndarray], list[list[list[np.ndarray]]]]:
    """The filter bank in Fourier on the padded M x N grid: (phi, psi).

    ``phi[res]`` is the low-pass phi_J at resolution ``res`` (0..J-1). ``psi[j][t][res]``
    is the Morlet wavelet of scale j (sigma = 0.8 * 2^j, xi = 3 pi / (4 * 2^j), slant
    4 / L) and angle ``theta_t = (L/2 - 1 - t) pi / L`` at resolution ``res`` (0..j);
    all are real (the filters are symmetric in space up to conjugation).
    """
    def dft(signal: np.ndarray) -> np.ndarray:
        return np.real(np.fft.fft2(signal))

    phi_hat = dft(gabor_2d(M, N, 0.8 * 2 ** (J - 1), 0.0, 0.0))
    phi = [periodize_fourier(phi_hat, res) for res in range(J)]
    psi = []
    for j in range(J):
        per_angle = []
        for t in range(L):
            theta = (int(L - L / 2 - 1) - t) * math.pi / L
            hat = dft(morlet_2d(M, N, 0.8 * 2 ** j, theta, 3.0 / 4.0 * math.pi / 2 ** j,
                                4.0 / L))
            per_angle.append([periodize_fourier(hat, res) for res in range(j + 1)])
        psi.append(per_angle)
    return phi, psi


@functools.lru_cache(maxsize=4)
def _filter_buffers(M: int, N: int, J: int, L: int) -> dict[str, torch.Tensor]:
    """The filters of :class:`Scattering2D` as complex64 buffers, built once per process.

    Building them takes about a second of numpy on one core, and a simulated client
    builds the model (and the scattering of its examples) every round: a 1,000-client
    federation with 100 clients a round spent ~100 s a round here before this cache.
    Each filter is only ever followed by one subsampling, by 2^(J - res) for phi at
    resolution res and 2^(j - res) for psi_j: its 1 / k^2 is folded in here. Callers get
    clones (the cached tensors are never handed out).
    """
    phi, psi = scattering_filters(M, N, J, L)
    out = {f"phi_{res}": torch.tensor(f / 4 ** (J - res), dtype=torch.complex64)
           for res, f in enumerate(phi)}
    for j in range(J):
        for res in range(j + 1):
            bank = np.stack([psi[j][t][res] for t in range(L)]) / 4 ** (j - res)
            out[f"psi_{j}_{res}"] = torch.tensor(bank, dtype=torch.complex64)  # (L, M', N')
    return out


def _subsample(x_hat: torch.Tensor, k: int) -> torch.Tensor:
    """k^2 times the DFT of ``ifft(x_hat)[::k, ::k]``: the spectrum folded k x k times.

    Subsampling by k in space is the folded spectrum divided by k^2; the filters carry
    that 1 / k^2 (see :class:`Scattering2D`), which saves a pass over the largest tensors.
    """
    if k == 1:
        return x_hat
    *lead, M, N = x_hat.shape
    folds = x_hat.reshape(*lead, k, M // k, k, N // k)
    # k^2 strided adds: ~6x faster than a complex mean over two axes on CPU (measured)
    return sum(folds[..., a, :, b, :] for a in range(k) for b in range(k))  # type: ignore[return-value]


class Scattering2D(nn.Module):
    """Order-2 scattering of 1-channel images, ``(B, [1,] H, W) -> (B, K, H/2^J, W/2^J)``.

    ``K = 1 + J L + L^2 J (J - 1) / 2`` channels (:func:`num_channels`).

    Parameters
    ----------
    shape : tuple[int, int]
        Image height and width, each a multiple of 2^J.
    J : int
        Number of scales (the output is 2^J times coarser).
    L : int
        Number of angles in [0, pi).

    Notes
    -----
    Symbols of Bruna & Mallat 2013, Section 2 (and the module docstring): J, L, psi_l,
    phi_J. As Kymatio does, the image is reflect-padded to ``2^J (floor((M + 2^J) /
    2^J) + 1)`` rows (36 for 28) so the periodic convolutions do not wrap the object
    onto itself, and the border 2^J-block is dropped from the output. No parameters
    and no state that changes: the filters are buffers built from (shape, J, L) alone
    and are not saved in ``state_dict`` (a model using it stores nothing extra).
    Channel order: S_0; S_1 by (j1, theta1); S_2 by (j1, theta1), then (j2, theta2).
    """

    def __init__(self, shape: tuple[int, int] = (28, 28), *, J: int = 2, L: int = 8) -> None:
        super().__init__()
        M, N = shape
        if J < 1 or L < 1 or M % 2 ** J or N % 2 ** J:
            raise ValueError(f"need J >= 1, L >= 1 and a shape divisible by 2^J; got "
                             f"shape={shape}, J={J}, L={L}")
        self.shape, self.J, self.L = (M, N), J, L
        pm, pn = (2 ** J * ((d + 2 ** J) // 2 ** J + 1) for d in (M, N))
        self.padded = (pm, pn)
        for name, bank in _filter_buffers(pm, pn, J, L).items():
            self.register_buffer(name, bank.clone(), persistent=False)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(K, H / 2^J, W / 2^J)``, the shape of one example's coefficients."""
        M, N = self.shape
        return num_channels(self.J, self.L), M // 2 ** self.J, N // 2 ** self.J

    def _phi(self, res: int) -> torch.Tensor:
        return getattr(self, f"phi_{res}")

    def _psi(self, j: int, res: int) -> torch.Tensor:
        return getattr(self, f"psi_{j}_{res}")

    def _low_pass(self, u_hat: torch.Tensor, res: int) -> torch.Tensor:
        """``(u * phi_J)(2^J v)`` for ``u`` at resolution ``res``, the border dropped."""
        s = _subsample(u_hat * self._phi(res), 2 ** (self.J - res))
        return torch.fft.ifft2(s).real[..., 1:-1, 1:-1]  # (..., M/2^J, N/2^J)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scattering coefficients ``(B, K, H / 2^J, W / 2^J)`` of ``(B, [1,] H, W)``."""
        if x.dim() == 4:
            if x.shape[1] != 1:
                raise ValueError(f"takes 1-channel images, got {x.shape[1]} channels")
            x = x[:, 0]
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"expected images of {self.shape}, got {tuple(x.shape[1:])}")
        B, (M, N) = x.shape[0], self.shape
        (PM, PN), J = self.padded, self.J
        top, left = (PM - M) // 2, (PN - N) // 2
        x = nn.functional.pad(x[:, None], (left, PN - N - left, top, PM - M - top),
                              mode="reflect")[:, 0]  # (B, PM, PN)
        x_hat = torch.fft.fft2(x)  # (B, PM, PN)
        order0 = [self._low_pass(x_hat, 0)[:, None]]  # (B, 1, M/2^J, N/2^J)
        order1, order2 = [], []
        for j1 in range(J):
            u1 = torch.fft.ifft2(_subsample(x_hat[:, None] * self._psi(j1, 0), 2 ** j1))
            u1_hat = torch.fft.fft2(u1.abs())  # (B, L, PM/2^j1, PN/2^j1)
            order1.append(self._low_pass(u1_hat, j1))  # (B, L, M/2^J, N/2^J)
            per_j2 = []
            for j2 in range(j1 + 1, J):
                u2 = torch.fft.ifft2(_subsample(u1_hat[:, :, None] * self._psi(j2, j1),
                                                2 ** (j2 - j1)))  # (B, L, L, ., .)
                per_j2.append(self._low_pass(torch.fft.fft2(u2.abs()), j2))
            if per_j2:
                s2 = torch.cat(per_j2, dim=2)  # (B, L, (J-1-j1) L, M/2^J, N/2^J)
                order2.append(s2.flatten(1, 2))
        out = torch.cat(order0 + order1 + order2, dim=1)
        return out.reshape(B, *self.out_shape)
