"""Combined labels (within-prompt normalisation, alpha mix, missing scores) and BT pairs."""

from __future__ import annotations

import numpy as np
import pytest

from persyn.scoring.labels import (
    combine_labels,
    make_pairs,
    normalise_within_prompt,
    oracle_sets,
)

nan = np.nan


def test_zscore_and_minmax_within_each_prompt():
    x = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]])
    z = normalise_within_prompt(x, "zscore")
    np.testing.assert_allclose(z[0], [-1.224744871, 0.0, 1.224744871])
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=1), 1.0)
    mm = normalise_within_prompt(x, "minmax")
    np.testing.assert_allclose(mm, [[0.0, 0.5, 1.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="normalisation"):
        normalise_within_prompt(x, "rank")  # type: ignore[arg-type]


def test_zero_spread_rows_become_zero_not_nan():
    x = np.array([[0.7, 0.7, 0.7], [nan, 0.3, nan], [nan, nan, nan]])
    for method in ("zscore", "minmax"):
        out = normalise_within_prompt(x, method)
        np.testing.assert_array_equal(out[0], [0.0, 0.0, 0.0])
        np.testing.assert_array_equal(out[1], [nan, 0.0, nan])
        assert np.isnan(out[2]).all()


def test_missing_teacher_is_absent_not_zero():
    q = np.array([[1.0, 0.0, nan]])
    ll = np.array([[-1.0, -2.0, -1.5]])
    r = combine_labels(q, ll, alpha=0.4)
    assert np.isnan(r[0, 2])
    # Normalised over the two present teachers only: z = +1/-1 for both components.
    np.testing.assert_allclose(r[0, :2], [1.0, -1.0])
    # Had the missing score counted as 0, teacher 2 would tie with teacher 1 and shift the stats.
    pairs = make_pairs(r)
    assert len(pairs) == 1 and (pairs.a[0], pairs.b[0]) == (0, 1) and pairs.b_wins[0] == 0.0
    # A missing learnability also removes the teacher (alpha > 0 needs both components)...
    l2 = np.array([[-1.0, nan, -1.5]])
    q2 = np.array([[1.0, 0.5, 0.0]])
    assert np.isnan(combine_labels(q2, l2, alpha=0.4)[0, 1])
    # ...but not when learnability has no weight.
    assert not np.isnan(combine_labels(q2, l2, alpha=0.0)).any()


def test_alpha_extremes_and_mix():
    q = np.array([[0.0, 1.0, 0.5]])
    ll = np.array([[-0.5, -3.0, -1.0]])
    np.testing.assert_allclose(combine_labels(q, None, alpha=0.0), normalise_within_prompt(q))
    np.testing.assert_allclose(combine_labels(None, ll, alpha=1.0), normalise_within_prompt(ll))
    mixed = combine_labels(q, ll, alpha=0.4)
    np.testing.assert_allclose(mixed, 0.6 * normalise_within_prompt(q) + 0.4 * normalise_within_prompt(ll))
    # Quality prefers teacher 1, learnability teacher 0; with alpha the winner flips.
    assert np.argmax(combine_labels(q, ll, alpha=0.0)) == 1
    assert np.argmax(combine_labels(q, ll, alpha=1.0)) == 0
    with pytest.raises(ValueError, match="learnability"):
        combine_labels(q, None, alpha=0.4)
    with pytest.raises(ValueError, match="alpha"):
        combine_labels(q, ll, alpha=1.5)
    with pytest.raises(ValueError, match="shape"):
        combine_labels(q, np.zeros((2, 3)), alpha=0.5)


def test_minmax_option_is_used_in_combination():
    q = np.array([[0.0, 1.0, 10.0]])
    r_z = combine_labels(q, None, alpha=0.0, normalisation="zscore")
    r_m = combine_labels(q, None, alpha=0.0, normalisation="minmax")
    np.testing.assert_allclose(r_m, [[0.0, 0.1, 1.0]])
    assert not np.allclose(r_z, r_m)


def test_pairs_drop_ties_and_label_winners():
    r = np.array(
        [
            [0.5, 0.5, 0.5],  # all tie: no pairs
            [0.0, 1.0, 1.0],  # teachers 1 and 2 tie
            [2.0, nan, 1.0],  # teacher 1 missing
        ]
    )
    p = make_pairs(r)
    got = sorted(zip(p.prompt.tolist(), p.a.tolist(), p.b.tolist(), p.b_wins.tolist(), strict=True))
    assert got == [(1, 0, 1, 1.0), (1, 0, 2, 1.0), (2, 0, 2, 0.0)]
    assert len(p.subset(np.array([False, True, False]))) == 2


def test_pairs_are_complete_for_distinct_labels():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 8))
    p = make_pairs(r)
    assert len(p) == 50 * 28
    # Every label is consistent with the matrix.
    np.testing.assert_array_equal(p.b_wins, (r[p.prompt, p.b] > r[p.prompt, p.a]).astype(np.float32))


def test_all_binary_ties_give_no_pairs_at_alpha_zero_but_learnability_breaks_them():
    q = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    ll = np.array([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    assert len(make_pairs(combine_labels(q, None, alpha=0.0))) == 0
    pairs = make_pairs(combine_labels(q, ll, alpha=0.4))
    assert set(pairs.prompt.tolist()) == {0}


def test_oracle_sets_keep_ties_and_refuse_missing():
    r = np.array([[1.0, 1.0, 0.0], [0.1, 0.3, 0.2], [1.0, nan, 0.0]])
    np.testing.assert_array_equal(
        oracle_sets(r), [[True, True, False], [False, True, False], [False, False, False]]
    )
