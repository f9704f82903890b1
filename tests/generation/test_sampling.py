"""Per-take sampling: its random numbers, its token frequencies, and its filters."""

from __future__ import annotations

import numpy as np
import torch

from generation.music.sampling import IMPOSSIBLE, SeededSampler, filter_logits, take_seed, uniform


def test_uniform_numbers_are_spread_and_depend_on_seed_step_and_row() -> None:
    seeds = torch.full((10_000,), 7, dtype=torch.int64)
    u = uniform(seeds, 3, torch.arange(10_000)).numpy()
    assert u.min() > 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 900  # no empty or crowded tenth
    one = torch.tensor([5])
    assert len({float(uniform(torch.tensor([s]), t, one)) for s in (1, 2) for t in (0, 1)}) == 4


def test_the_sampler_draws_tokens_as_often_as_their_probability() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    sampler = SeededSampler([11], num_codebooks=1, guidance_scale=1.0, temperature=1.0, top_k=0, top_p=0.0)
    counts = np.zeros(4)
    ids = torch.zeros((1, 1), dtype=torch.long)
    for _ in range(4_000):
        out = sampler(ids, probs.log()[None])
        assert (out[0] == 0).sum() == 1 and (out[0] == IMPOSSIBLE).sum() == 3
        counts[int(out[0].argmax())] += 1
    np.testing.assert_allclose(counts / counts.sum(), probs.numpy(), atol=0.03)


def test_guidance_combines_the_halves_and_every_half_gets_the_same_token() -> None:
    sampler = SeededSampler([1, 2], num_codebooks=2, guidance_scale=3.0, temperature=1.0, top_k=1, top_p=0.0)
    cond = torch.tensor([[0.0, 1.0, 0.0]] * 4)
    uncond = torch.tensor([[0.0, 1.5, 0.0]] * 4)  # guidance: 1.5 + 3 * (1 - 1.5) = 0 for token 1
    uncond[:, 2] = -1.0  # token 2: -1 + 3 * (0 - -1) = 2: the guided favourite
    out = sampler(torch.zeros((4, 1), dtype=torch.long), torch.cat([cond, uncond]))
    assert out.shape == (8, 3) and out.argmax(dim=1).tolist() == [2] * 8


def test_top_k_and_top_p_keep_the_likely_tokens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2, top_p=0.0)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert not torch.isinf(filter_logits(logits, top_k=0, top_p=0.0)).any()


def test_take_seeds() -> None:
    assert take_seed(42, 0) == 42 and len({take_seed(42, t) for t in range(4)}) == 4
    assert all(0 <= take_seed(2**31 - 1, t) < 2**31 for t in range(4))
