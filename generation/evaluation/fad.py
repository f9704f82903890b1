"""Fréchet Audio Distance: pure numpy (and scipy's ``sqrtm``), so the numbers can be checked against a formula.

The definitions follow microsoft/fadtk (``fadtk/fad.py``: ``calc_embd_statistics``, ``calc_frechet_distance``,
``FrechetAudioDistance.score_inf``) and gudgud96/frechet-audio-distance, both adapted from mseitzer/pytorch-fid.
Neither package is a dependency: fadtk pulls in its own model zoo and tooling, and frechet-audio-distance needs
torchaudio, which cannot be installed beside our torch. What is kept exactly:

* statistics are ``np.mean(axis=0)`` and ``np.cov(rowvar=False)`` (unbiased, ddof 1);
* d² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), with ``scipy.linalg.sqrtm`` in float64; when the product is
  singular or the root is not finite, ``eps`` is added to both diagonals and the root taken again; an imaginary
  part left by rounding is dropped only if the diagonal's is within 1e-3 of zero (else it is an error);
* FAD∞ fits FAD(N) = a + b/N with ``np.polyfit`` over 1/N and reports the intercept a, with the slope and R².

One deliberate difference: fadtk draws its subsets *with* replacement. A bootstrap sample of n rows from N rows
is a sample of the N-row empirical distribution, so its extrapolation to n → ∞ lands on the N-row set's own FAD,
1/N bias included. Subsets drawn *without* replacement are each an i.i.d. sample of the model's distribution,
so the intercept estimates the distance with the bias removed. ``replace=True`` gives fadtk's behaviour.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import linalg

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float64]

#: What fadtk and pytorch-fid add to the covariances' diagonals when their product has no usable root.
EPS = 1e-6
#: The largest imaginary part on the root's diagonal that is still rounding (fadtk's and pytorch-fid's atol).
IMAGINARY_ATOL = 1e-3
#: FAD∞'s subset sizes: fadtk's default number of steps.
FAD_INF_STEPS = 25


@dataclass(frozen=True, slots=True)
class Statistics:
    """The Gaussian a set of embeddings is summarised by, and how many rows it came from."""

    mean: Matrix  # (dim,)
    cov: Matrix  # (dim, dim)
    count: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


@dataclass(frozen=True, slots=True)
class FadInf:
    """FAD extrapolated to infinitely many embeddings: ``score`` = a of FAD(N) = a + b/N (b = ``slope``)."""

    score: float
    slope: float
    r2: float
    points: list[tuple[int, float]]  # (subset size, FAD)


def statistics(embeddings: npt.ArrayLike) -> Statistics:
    """Mean and covariance of rows of embeddings (rows, dim), in float64 whatever they were stored as."""
    rows = np.asarray(embeddings, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings shaped (rows, dim), got shape {rows.shape}")
    return Statistics(np.mean(rows, axis=0), np.atleast_2d(np.cov(rows, rowvar=False)), int(rows.shape[0]))


def rank_problem(count: int, dim: int, *, what: str) -> str | None:
    """Why a set of ``count`` embeddings cannot give a full-rank covariance in ``dim`` dimensions, or None.

    A sample covariance has rank at most count − 1, so below dim + 1 rows some directions have zero variance
    and the distance depends on the ``eps`` fallback more than on the audio.
    """
    if count > dim:
        return None
    return f"{what}: {count} embeddings for {dim} dimensions (a full-rank covariance needs {dim + 1}): FAD unreliable"


def _sqrtm(product: Matrix) -> Matrix | None:
    """The principal square root, or None where scipy finds the matrix singular or the root is not finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            root = linalg.sqrtm(product)
        except (linalg.LinAlgWarning, linalg.LinAlgError, ValueError):
            return None
    root = np.asarray(root)
    return root if np.isfinite(root).all() else None


def frechet_distance(mu1: Matrix, cov1: Matrix, mu2: Matrix, cov2: Matrix, *, eps: float = EPS) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    Raises:
        ValueError: the shapes disagree, or the root keeps an imaginary part larger than rounding explains.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shapes differ: mean {mu1.shape} vs {mu2.shape}, covariance {cov1.shape} vs {cov2.shape}")
    covmean = _sqrtm(cov1 @ cov2)
    if covmean is None:
        log.info("singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(cov1.shape[0]) * eps
        covmean = _sqrtm((cov1 + offset) @ (cov2 + offset))
        if covmean is None:
            raise ValueError("the covariance product has no finite square root, even with the eps offset")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in the covariance root")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def fad(reference: Statistics, generated: Statistics) -> float:
    """FAD between two summarised sets (the order does not matter: the distance is symmetric)."""
    return frechet_distance(reference.mean, reference.cov, generated.mean, generated.cov)


def subset_sizes(count: int, *, min_n: int | None = None, steps: int = FAD_INF_STEPS) -> list[int]:
    """FAD∞'s subset sizes: ``steps`` sizes from ``min_n`` (default a quarter of ``count``, at least 2) to ``count``.

    fadtk starts at 500 frames; a per-prompt set of clips may have fewer than that in all, so the default scales.
    """
    low = max(2, count // 4 if min_n is None else min_n)
    return sorted({int(n) for n in np.linspace(low, count, steps)}) if count >= low else []


def fad_inf(
    reference: Statistics,
    embeddings: npt.ArrayLike,
    *,
    min_n: int | None = None,
    steps: int = FAD_INF_STEPS,
    replace: bool = False,
    rng: np.random.Generator | int | None = 0,
) -> FadInf | None:
    """FAD∞ of ``embeddings`` (rows, dim) against ``reference``: FAD on random subsets, extrapolated in 1/N.

    None when there are fewer than three distinct subset sizes to fit a line through (a handful of clips).
    ``rng`` fixes the subsets (default seed 0, so a report is reproducible).
    """
    rows = np.asarray(embeddings, dtype=np.float64)
    sizes = subset_sizes(rows.shape[0], min_n=min_n, steps=steps)
    if len(sizes) < 3:
        return None
    generator = np.random.default_rng(rng)
    points = []
    for n in sizes:
        picked = rows[generator.choice(rows.shape[0], size=n, replace=replace)]
        points.append((n, fad(reference, statistics(picked))))
    xs = 1.0 / np.array(sizes, dtype=np.float64)
    ys = np.array([score for _, score in points])
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = float(np.sum((ys - (slope * xs + intercept)) ** 2))
    spread = float(np.sum((ys - ys.mean()) ** 2))
    r2 = 1.0 - residual / spread if spread > 0 else 1.0
    return FadInf(score=float(intercept), slope=float(slope), r2=r2, points=points)
