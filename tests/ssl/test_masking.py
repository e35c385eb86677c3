"""Masking strategies: exact counts, hint and low-attention guarantees, reproducibility, broadcasting."""

from __future__ import annotations

import math

import pytest
import torch

from dagman.ssl.masking import (
    MASKING_STRATEGIES,
    MaskingStrategy,
    count_for_ratio,
    make_mask,
    mask_to_grid,
    resample_scores,
    strategy_needs_scores,
    upsample_mask,
)

GRIDS = [(2, 2, 2), (3, 4, 5), (4, 4, 4), (1, 3, 7)]
RATIOS = [0.0, 0.3, 0.55, 0.7, 1.0]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_scores(b: int, n: int, seed: int = 0) -> torch.Tensor:
    """Distinct attention scores in a random order per image."""
    g = _gen(seed)
    return torch.stack([torch.randperm(n, generator=g).float() / n for _ in range(b)])


def test_count_for_ratio_rounds_half_up() -> None:
    """round(r*N) is round-half-up, not Python's banker's rounding."""
    assert count_for_ratio(0.1, 5) == 1  # 0.5 -> 1 (banker's would give 0)
    assert count_for_ratio(0.25, 10) == 3  # 2.5 -> 3
    assert count_for_ratio(0.7, 4096) == round(0.7 * 4096)
    assert count_for_ratio(1.0, 7) == 7
    with pytest.raises(ValueError, match="ratio"):
        count_for_ratio(1.2, 10)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("strategy", ["attention-low", "random", "blockwise"])
def test_counts_exact(strategy: str, grid: tuple[int, int, int], ratio: float) -> None:
    """Every strategy without hints masks exactly round(r*N) cells in every image."""
    n = math.prod(grid)
    scores = _distinct_scores(6, n)
    mask = make_mask(strategy, grid, ratio, scores=scores, generator=_gen())
    assert mask.dtype == torch.bool and mask.shape == (6, n)
    assert (mask.sum(dim=1) == count_for_ratio(ratio, n)).all()


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize(("ratio", "hint"), [(0.7, 0.1), (0.5, 0.2), (0.3, 0.0), (0.9, 0.1)])
def test_attention_high_hints_and_low_cells(grid: tuple[int, int, int], ratio: float, hint: float) -> None:
    """attention-high masks exactly ranks s*N .. s*N + r*N - 1: top hints and lowest cells stay visible."""
    n = math.prod(grid)
    scores = _distinct_scores(5, n, seed=1)
    mask = make_mask("attention-high", grid, ratio, scores=scores, hint_ratio=hint, generator=_gen())
    n_mask, n_hint = count_for_ratio(ratio, n), count_for_ratio(hint, n)
    assert (mask.sum(dim=1) == n_mask).all()
    order = scores.argsort(dim=1, descending=True)
    ranked = mask.gather(1, order)  # mask by rank, rank 0 = most attended
    assert not ranked[:, :n_hint].any(), "a hint (top-attention cell) was masked"
    assert ranked[:, n_hint : n_hint + n_mask].all()
    assert not ranked[:, n_hint + n_mask :].any(), "a low-attention cell was masked"


def test_attention_high_hand_made() -> None:
    """On 10 cells with r=0.5, s=0.2: the two best cells are hints, the next five are masked."""
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5]])
    mask = make_mask("attention-high", (1, 2, 5), 0.5, scores=scores, hint_ratio=0.2)
    # ranks: 0.9 (1), 0.8 (3) hints; masked 0.7 (5), 0.6 (7), 0.5 (9), 0.4 (8), 0.3 (6)
    expected = torch.zeros(1, 10, dtype=torch.bool)
    expected[0, [5, 6, 7, 8, 9]] = True
    assert torch.equal(mask, expected)


def test_default_hint_ratio_is_point_one() -> None:
    """The default attention-high hint ratio is 0.1 and the default mask ratio is 0.7."""
    scores = _distinct_scores(2, 100)
    mask = make_mask("attention-high", (4, 5, 5), scores=scores)
    ranked = mask.gather(1, scores.argsort(dim=1, descending=True))
    assert not ranked[:, :10].any() and ranked[:, 10:80].all() and not ranked[:, 80:].any()


def test_attention_low_masks_exactly_the_lowest() -> None:
    """attention-low masks exactly the round(r*N) least-attended cells."""
    n = 60
    scores = _distinct_scores(4, n, seed=2)
    mask = make_mask("attention-low", (3, 4, 5), 0.4, scores=scores)
    lowest = scores.argsort(dim=1)[:, :24]
    expected = torch.zeros_like(mask).scatter_(1, lowest, True)
    assert torch.equal(mask, expected)


def test_attmask_variant_reveals_random_top_cells() -> None:
    """AttMask's hint variant masks only top-r cells and reveals round(s*N) of them."""
    n = 100
    scores = _distinct_scores(3, n, seed=3)
    mask = make_mask("attention-high-attmask", (4, 5, 5), 0.7, scores=scores, generator=_gen())
    assert (mask.sum(dim=1) == 70 - 10).all()
    ranked = mask.gather(1, scores.argsort(dim=1, descending=True))
    assert not ranked[:, 70:].any()


def test_ties_broken_at_random_not_by_index() -> None:
    """Uniform attention (all ties) gives different masks per image, not always the first cells."""
    scores = torch.full((8, 64), 0.5)
    mask = make_mask("attention-high", (4, 4, 4), 0.5, scores=scores, generator=_gen())
    assert (mask.sum(dim=1) == 32).all()
    assert len({tuple(row.tolist()) for row in mask}) > 1
    assert mask[:, :32].float().mean() < 0.9


@pytest.mark.parametrize("strategy", MASKING_STRATEGIES)
def test_reproducible_with_seeded_generator(strategy: str) -> None:
    """The same seed gives the same mask; the batch is not masked identically image to image."""
    scores = torch.full((6, 64), 1.0)  # ties, so the generator matters for the attention strategies too
    a = make_mask(strategy, (4, 4, 4), 0.5, scores=scores, generator=_gen(7))
    b = make_mask(strategy, (4, 4, 4), 0.5, scores=scores, generator=_gen(7))
    assert torch.equal(a, b)
    assert len({tuple(row.tolist()) for row in a}) > 1


def test_blockwise_forms_blocks() -> None:
    """Blockwise masks are spatially clustered: far more masked neighbours than random masks have."""
    grid = (8, 8, 8)

    def neighbour_agreement(mask: torch.Tensor) -> float:
        vol = mask_to_grid(mask, grid).float()
        return float((vol[:, 1:] * vol[:, :-1]).mean())

    block = make_mask("blockwise", grid, 0.3, batch_size=16, generator=_gen(1))
    rand = make_mask("random", grid, 0.3, batch_size=16, generator=_gen(1))
    assert (block.sum(dim=1) == count_for_ratio(0.3, 512)).all()
    assert neighbour_agreement(block) > 1.5 * neighbour_agreement(rand)


def test_missing_inputs_and_bad_names() -> None:
    """Plain errors for an unknown strategy, missing scores, missing batch size and impossible ratios."""
    with pytest.raises(ValueError, match="valid: attention-high"):
        make_mask("nope", (2, 2, 2), 0.5, batch_size=1)
    with pytest.raises(ValueError, match="attention scores"):
        make_mask("attention-high", (2, 2, 2), 0.5)
    with pytest.raises(ValueError, match="batch_size"):
        make_mask("random", (2, 2, 2), 0.5)
    with pytest.raises(ValueError, match="no hint tokens"):
        make_mask("random", (2, 2, 2), 0.5, batch_size=1, hint_ratio=0.1)
    with pytest.raises(ValueError, match="more than"):
        make_mask("attention-high", (2, 5, 1), 0.95, scores=torch.rand(1, 10), hint_ratio=0.1)
    with pytest.raises(ValueError, match="do not match"):
        make_mask("attention-low", (2, 2, 2), 0.5, scores=torch.rand(1, 9))
    with pytest.raises(ValueError, match="NaN"):
        make_mask("attention-low", (2, 2, 2), 0.5, scores=torch.full((1, 8), float("nan")))


def test_masking_strategy_object_and_needs_scores() -> None:
    """MaskingStrategy wraps make_mask; needs_scores says which strategies need the teacher's SATT."""
    strat = MaskingStrategy("attention-high", ratio=0.5, hint_ratio=0.25)
    scores = _distinct_scores(2, 8)
    assert torch.equal(
        strat((2, 2, 2), scores), make_mask("attention-high", (2, 2, 2), 0.5, scores=scores, hint_ratio=0.25)
    )
    assert strat.needs_scores and strategy_needs_scores("attention-low")
    assert not strategy_needs_scores("random") and not MaskingStrategy("blockwise").needs_scores


def test_upsample_mask_covers_factor_cubes() -> None:
    """Each cell of the stage grid becomes a factor^3 block of the finer grid."""
    mask = make_mask("random", (2, 3, 2), 0.5, batch_size=3, generator=_gen())
    cells = mask_to_grid(mask, (2, 3, 2))
    up = upsample_mask(cells, 4)
    assert up.shape == (3, 8, 12, 8) and up.dtype == torch.bool
    for b in range(3):
        for z in range(2):
            for y in range(3):
                for x in range(2):
                    block = up[b, 4 * z : 4 * z + 4, 4 * y : 4 * y + 4, 4 * x : 4 * x + 4]
                    assert bool(block.all()) if cells[b, z, y, x] else not bool(block.any())
    assert int(up.sum()) == int(mask.sum()) * 64
    assert upsample_mask(cells, (1, 2, 3)).shape == (3, 2, 6, 6)


def test_mask_to_grid_is_row_major() -> None:
    """Flat index i maps to (i // (h*w), (i // w) % h, i % w), the order of flatten(2) on feature maps."""
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[0, 1 * 12 + 2 * 4 + 3] = True
    assert mask_to_grid(mask, (2, 3, 4))[0, 1, 2, 3]


def test_resample_scores_between_stages() -> None:
    """SATT from a finer stage is averaged onto the stage-3 grid; from a coarser stage it is repeated."""
    fine = torch.arange(64, dtype=torch.float32).reshape(1, 64)  # (4, 4, 4) grid
    coarse = resample_scores(fine, (4, 4, 4), (2, 2, 2))
    vol = fine.reshape(4, 4, 4)
    assert torch.isclose(coarse[0, 0], vol[:2, :2, :2].mean())
    assert torch.isclose(coarse[0, 7], vol[2:, 2:, 2:].mean())
    up = resample_scores(coarse, (2, 2, 2), (4, 4, 4))
    assert torch.equal(up.reshape(4, 4, 4)[:2, :2, :2], coarse[0, 0].expand(2, 2, 2))
    with pytest.raises(ValueError, match="shrink and grow"):
        resample_scores(fine, (4, 4, 4), (2, 8, 4))
