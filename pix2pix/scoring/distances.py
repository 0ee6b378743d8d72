"""FID and KID between two sets of Inception features, pure numpy in float64.

FID (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of the matrix square
root is computed as the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), a symmetric
positive semi-definite matrix with the same eigenvalues as S1 S2: stable when the covariances are
singular (fewer images than the 2048 features), where scipy's sqrtm of S1 S2 can turn complex.

KID (Binkowski et al. 2018): the unbiased MMD^2 with the polynomial kernel (x.y / d + 1)^3, averaged
over KID_SUBSETS random subsets of `subset_size` images from each side (as torch-fidelity and clean-fid;
the subset size is min(1000, both sides' counts), and is reported with the value).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 0


@dataclass(frozen=True)
class Stats:
    """Mean and covariance of one set of features."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @functools.cached_property
    def cov_sqrt(self) -> np.ndarray:
        """The covariance's PSD square root (kept: a split's real side is compared again and again)."""
        return _psd_sqrt(self.cov)

    @classmethod
    def of(cls, features: np.ndarray) -> Stats:
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"FID needs at least two images on each side, got {len(features)}")
        return cls(features.mean(0), np.cov(features, rowvar=False), len(features))


def _nonnegative(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those within rounding of zero (numpy's rank tolerance) set to 0."""
    tolerance = values.max(initial=0.0) * len(values) * np.finfo(np.float64).eps
    return np.where(values > tolerance, values, 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(_nonnegative(values))) @ vectors.T


def frechet_distance(a: Stats, b: Stats) -> float:
    """FID between two feature distributions (the Frechet distance of Gaussians with their moments)."""
    root = a.cov_sqrt
    inner = root @ b.cov @ root
    trace_sqrt = np.sqrt(_nonnegative(np.linalg.eigvalsh((inner + inner.T) / 2))).sum()
    diff = a.mean - b.mean
    return max(0.0, float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_sqrt))  # >= 0 but for rounding


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 estimate of two equal-sized samples with the kernel (x.y / d + 1)^3."""
    d, m = x.shape[1], len(x)
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kid_subset_size(count_a: int, count_b: int) -> int:
    return min(KID_SUBSET_SIZE, count_a, count_b)


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS, seed: int = KID_SEED
) -> tuple[float, float, int]:
    """(KID mean, its standard deviation over the subsets, the subset size)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    size = kid_subset_size(len(a), len(b))
    if size < 2:
        raise ValueError(f"KID needs at least two images on each side, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values)), size


def fid_kid(a: np.ndarray, b: np.ndarray, stats_a: Stats | None = None) -> dict[str, float | int]:
    """FID and KID of two feature sets (`stats_a`: a's Stats, when known already: its square root is
    computed once), as metrics.json keeps them."""
    kid, kid_std, size = kernel_inception_distance(a, b)
    fid = frechet_distance(stats_a or Stats.of(a), Stats.of(b))
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "kid_subset_size": size}
