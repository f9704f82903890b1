"""FAD and FAD∞ against formulas: the Fréchet distance between two Gaussians has a closed form, so the numbers
are checked against it computed another way (symmetric eigendecompositions, not ``sqrtm`` of the product)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from generation.evaluation.fad import (
    Statistics,
    fad,
    fad_inf,
    frechet_distance,
    rank_problem,
    statistics,
    subset_sizes,
)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def analytic(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """W2² between Gaussians: |mu1-mu2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), all roots of symmetric matrices."""
    root = _psd_sqrt(s1)
    cross = _psd_sqrt(root @ s2 @ root)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def _random_cov(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_identical_sets_are_at_distance_zero() -> None:
    rows = np.random.default_rng(0).normal(size=(500, 8))
    stats = statistics(rows)
    assert abs(fad(stats, stats)) < 1e-8


def test_statistics_are_the_mean_and_unbiased_covariance() -> None:
    rows = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    stats = statistics(rows)
    np.testing.assert_allclose(stats.mean, rows.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(stats.cov, np.cov(rows.astype(np.float64), rowvar=False))
    assert (stats.count, stats.dim) == (50, 3)


@pytest.mark.parametrize("dim", [1, 4, 16])
def test_distance_between_known_gaussians_matches_the_formula(dim: int) -> None:
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = _random_cov(rng, dim), _random_cov(rng, dim)
    expected = analytic(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_commuting_covariances_have_a_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # 5 + (4 + 1 + 0)
    assert expected == 10.0
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)) == pytest.approx(2.0, rel=1e-6)


def test_distance_of_sample_statistics_matches_the_formula_on_them() -> None:
    rng = np.random.default_rng(7)
    a = rng.multivariate_normal(np.zeros(6), _random_cov(rng, 6), size=400)
    b = rng.multivariate_normal(np.full(6, 0.3), _random_cov(rng, 6), size=300)
    sa, sb = statistics(a), statistics(b)
    assert fad(sa, sb) == pytest.approx(analytic(sa.mean, sa.cov, sb.mean, sb.cov), rel=1e-6)


def test_the_distance_is_symmetric() -> None:
    rng = np.random.default_rng(3)
    a, b = statistics(rng.normal(size=(200, 5))), statistics(rng.normal(0.5, 2.0, size=(150, 5)))
    assert fad(a, b) == pytest.approx(fad(b, a), rel=1e-9)


def test_rank_deficient_covariances_fall_back_to_the_eps_offset_quietly() -> None:
    rng = np.random.default_rng(4)
    few = statistics(rng.normal(size=(3, 10)))  # rank 2 in 10 dimensions: the product is singular
    many = statistics(rng.normal(size=(100, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = fad(many, few)
    assert np.isfinite(value) and value > 0
    assert rank_problem(3, 10, what="x") is not None
    assert rank_problem(11, 10, what="x") is None


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        statistics(np.zeros((1, 4)))


def test_fad_inf_converges_to_the_true_distance_where_plain_fad_is_biased() -> None:
    rng = np.random.default_rng(11)
    dim, n = 4, 60
    mu1, mu2 = np.zeros(dim), np.full(dim, 0.5)
    s1, s2 = _random_cov(rng, dim), _random_cov(rng, dim)
    true = analytic(mu1, s1, mu2, s2)
    reference = Statistics(mu1, s1, count=10**9)  # the exact reference distribution
    plain, extrapolated = [], []
    for trial in range(200):
        sample = rng.multivariate_normal(mu2, s2, size=n)
        plain.append(fad(reference, statistics(sample)))
        result = fad_inf(reference, sample, rng=trial)
        assert result is not None
        extrapolated.append(result.score)
    plain_bias, inf_bias = np.mean(plain) - true, np.mean(extrapolated) - true
    assert plain_bias > 0.05 * true  # FAD of a finite set overestimates: its sample covariance adds trace
    assert abs(inf_bias) < 0.3 * plain_bias


def test_fad_inf_reports_its_fit_and_needs_enough_rows() -> None:
    rng = np.random.default_rng(5)
    reference = statistics(rng.normal(size=(1000, 3)))
    result = fad_inf(reference, rng.normal(1.0, 1.0, size=(200, 3)))
    assert result is not None
    assert [n for n, _ in result.points] == subset_sizes(200)
    assert result.points[0][0] == 50 and result.points[-1][0] == 200
    assert result.slope > 0 and -1.0 <= result.r2 <= 1.0
    assert fad_inf(reference, rng.normal(size=(3, 3))) is None  # subsets of 2 and 3 rows: no line through 3 points
    again = fad_inf(reference, rng.normal(1.0, 1.0, size=(200, 3)), rng=1)
    assert again is not None and again.score != result.score
