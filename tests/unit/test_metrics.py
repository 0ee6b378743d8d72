"""L1, PSNR and SSIM on 8-bit images: exact values for known cases, and scikit-image's SSIM."""

from __future__ import annotations

import numpy as np
import pytest

from pix2pix.scoring.metrics import PSNR_CAP_DB, gaussian_window, image_metrics, l1, psnr, ssim


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)


def test_identical_images_score_perfectly(image):
    assert image_metrics(image, image) == {"l1": 0.0, "psnr": PSNR_CAP_DB, "ssim": pytest.approx(1.0)}


def test_a_known_perturbation_matches_numpy(image):
    target = np.full((32, 32, 3), 100, np.uint8)
    shifted = target + np.uint8(10)
    assert l1(shifted, target) == pytest.approx(10 / 127.5)
    assert psnr(shifted, target) == pytest.approx(10 * np.log10(255**2 / 100))
    noisy = np.clip(image.astype(int) + np.random.default_rng(1).integers(-30, 31, image.shape), 0, 255)
    mse = ((noisy - image.astype(float)) ** 2).mean()
    assert psnr(noisy.astype(np.uint8), image) == pytest.approx(10 * np.log10(255**2 / mse))


def brute_force_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM written out window by window (slow, obviously right)."""
    w = np.outer(gaussian_window(), gaussian_window())
    k = w.shape[0]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(float), b[..., ch].astype(float)
        for i in range(x.shape[0] - k + 1):
            for j in range(x.shape[1] - k + 1):
                px, py = x[i : i + k, j : j + k], y[i : i + k, j : j + k]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                scores.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(scores))


def test_ssim_matches_the_definition_and_scikit_image(image):
    small = image[:20, :18]
    other = np.clip(small.astype(int) + np.random.default_rng(2).integers(-60, 61, small.shape), 0, 255)
    other = other.astype(np.uint8)
    assert ssim(other, small) == pytest.approx(brute_force_ssim(other, small), abs=1e-9)
    assert ssim(other, small) == pytest.approx(ssim(small, other))
    from skimage.metrics import structural_similarity

    expected = structural_similarity(
        other, small, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(other, small) == pytest.approx(expected, abs=1e-9)


def test_more_noise_scores_worse(image):
    rng = np.random.default_rng(3)
    scores = []
    for amplitude in (5, 40, 120):
        noisy = np.clip(image.astype(int) + rng.integers(-amplitude, amplitude + 1, image.shape), 0, 255)
        scores.append(image_metrics(noisy.astype(np.uint8), image))
    assert scores[0]["l1"] < scores[1]["l1"] < scores[2]["l1"]
    assert scores[0]["psnr"] > scores[1]["psnr"] > scores[2]["psnr"]
    assert scores[0]["ssim"] > scores[1]["ssim"] > scores[2]["ssim"]


def test_images_of_different_shapes_are_refused(image):
    with pytest.raises(ValueError, match="differ in shape"):
        l1(image, image[:10])
