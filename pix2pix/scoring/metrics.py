"""Image-quality metrics on 8-bit images as saved (HWC uint8), pure numpy.

- L1: mean absolute difference on the [-1, 1] scale the generator works in, so it reads like
  the training L1 and the validation L1 of a run.
- PSNR: 10 log10(255^2 / MSE) in dB; identical images give PSNR_CAP_DB instead of infinity.
- SSIM: Wang et al. (2004): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 255,
  averaged over the valid window positions and over the channels.
"""

from __future__ import annotations

import numpy as np

PSNR_CAP_DB = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


def _check(generated: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if generated.shape != target.shape:
        raise ValueError(f"images differ in shape: {generated.shape} and {target.shape}")
    return generated.astype(np.float64), target.astype(np.float64)


def l1(generated: np.ndarray, target: np.ndarray) -> float:
    a, b = _check(generated, target)
    return float(np.abs(a - b).mean() / (DATA_RANGE / 2))


def psnr(generated: np.ndarray, target: np.ndarray) -> float:
    a, b = _check(generated, target)
    mse = float(((a - b) ** 2).mean())
    if mse == 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10 * np.log10(DATA_RANGE**2 / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of an HW image with the 1-D window `w` along both axes."""
    rows = np.lib.stride_tricks.sliding_window_view(img, len(w), axis=0) @ w
    return np.lib.stride_tricks.sliding_window_view(rows, len(w), axis=1) @ w


def ssim(generated: np.ndarray, target: np.ndarray) -> float:
    a, b = _check(generated, target)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    size = min(SSIM_WINDOW, *a.shape[:2])
    size -= 1 - size % 2  # an odd window that fits a tiny image
    w = gaussian_window(size)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    scores = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
        var_x = _filter_valid(x * x, w) - mu_x**2
        var_y = _filter_valid(y * y, w) - mu_y**2
        cov = _filter_valid(x * y, w) - mu_x * mu_y
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        scores.append(s.mean())
    return float(np.mean(scores))


def image_metrics(generated: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {"l1": l1(generated, target), "psnr": psnr(generated, target), "ssim": ssim(generated, target)}


def mean_l1(generated: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error in the [-1, 1] value range (the L1 term of the G loss)."""
    return float(np.abs(generated - targets).mean())
