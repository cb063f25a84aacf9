"""Intervals over texts for the patching tables: the per-text sums reproduce the pooled summary exactly, a
change planted in one layer gets a degenerate interval at 1 (every text recovers all of it), and the bootstrap
pieces agree with each other and with their definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_interp import load_prompts
from rlhf_interp.core.bootstrap import bootstrap_weights, ratio_of_sums_interval
from rlhf_interp.patching import (
    activation_patching,
    first_layer_reaching,
    fraction_difference,
    fraction_interval,
    fraction_intervals,
    kl_clean_interval,
    proxy_recovered_interval,
    rewarded_token_ids,
    summarize,
)

from helpers import perturbed_tiny

TEXTS = load_prompts(limit=6, seed=0)


@pytest.fixture(scope="module")
def planted(tiny):
    """Patching tables of tiny-test against a copy with layer 1's MLP perturbed, with per-text sums."""
    tuned = perturbed_tiny("model.layers.1.mlp.down_proj.weight", scale=0.3, seed=1, relative=True)
    return activation_patching(tiny, tuned, TEXTS, batch_size=4, return_per_text=True,
                               reward_token_ids=rewarded_token_ids(tiny.tokenizer, "."),
                               reverse_components=["hook_mlp_out"])


def test_per_text_sums_reproduce_the_pooled_summary(planted):
    table, per_text = planted
    assert len(table) == 1 + 2 * 4 + 1 + 2  # into base: embedding + layers x components; into tuned: embedding + mlp
    assert set(per_text["text"]) == set(range(len(TEXTS)))
    assert (per_text.groupby(["patch", "direction"])["text"].count() == len(TEXTS)).all()
    again = summarize(per_text)
    pd.testing.assert_frame_equal(again, table)
    # the unpatched receivers: KL(base||tuned) per position is the pooled mean of the per-text sums
    base = per_text[(per_text["patch"] == -1) & (per_text["direction"] == "into_base")]
    assert table["kl_clean"].iloc[0] == pytest.approx(base["kl_tuned_sum"].sum() / base["n_tokens"].sum(), rel=1e-12)


def test_planted_layer_recovers_everything_on_every_text(planted):
    table, per_text = planted
    iv = fraction_interval(per_text, ("into_base", 1, "hook_mlp_out"))
    assert (iv.value, iv.low, iv.high) == (1.0, 1.0, 1.0)
    assert iv.n == {"texts": len(TEXTS), "positions": int(table["n_tokens"].iloc[0])}
    before = fraction_interval(per_text, ("into_base", 0, "hook_mlp_out"))
    assert (before.value, before.low, before.high) == (0.0, 0.0, 0.0)  # nothing changed before layer 1
    proxy = proxy_recovered_interval(per_text, ("into_base", 1, "hook_mlp_out"))
    assert proxy.value == pytest.approx(1.0) and proxy.low == pytest.approx(1.0) and proxy.high == pytest.approx(1.0)
    layer = first_layer_reaching(per_text, 0.5)
    assert (layer.value, layer.low, layer.high) == (1.0, 1.0, 1.0)
    assert first_layer_reaching(per_text, 0.5, component="hook_attn_out") is None  # no attention patch gets there
    diff = fraction_difference(per_text, ("into_base", 1, "hook_mlp_out"), ("into_base", 1, "hook_attn_out"))
    assert diff.low > 0 and diff.method.startswith("paired")
    kl = kl_clean_interval(per_text)
    assert kl.low <= kl.value <= kl.high and kl.value == pytest.approx(table["kl_clean"].iloc[0], rel=1e-12)


def test_many_patches_at_once_match_one_at_a_time(planted):
    _, per_text = planted
    many = fraction_intervals(per_text, seed=3)
    for key in [("into_base", 1, "hook_attn_out"), ("into_base", 1, "hook_resid_post"), ("into_tuned", 1, "hook_mlp_out")]:
        one = fraction_interval(per_text, key, seed=3)
        got = many[(many["direction"] == key[0]) & (many["layer"] == key[1]) & (many["component"] == key[2])].iloc[0]
        assert (got["fraction_low"], got["fraction_high"]) == pytest.approx((one.low, one.high), abs=1e-12)
    with pytest.raises(ValueError, match="different receivers"):
        fraction_difference(per_text, ("into_base", 1, "hook_mlp_out"), ("into_tuned", 1, "hook_mlp_out"))


def test_ratio_of_sums_interval_resamples_units():
    weights = bootstrap_weights(5, n_boot=200, seed=0)
    assert weights.shape == (200, 5) and (weights.sum(axis=1) == 5).all()
    same = ratio_of_sums_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # every unit has ratio 2: no spread
    assert (same.value, same.low, same.high) == (2.0, 2.0, 2.0)
    rng = np.random.default_rng(0)
    num, den = rng.normal(1.0, 0.5, 64), rng.uniform(1.0, 2.0, 64)
    iv = ratio_of_sums_interval(num, den, offset=1.0, scale=-1.0, n={"texts": 64})
    assert iv.value == pytest.approx(1.0 - num.sum() / den.sum())
    assert iv.low < iv.value < iv.high and iv.n == {"texts": 64}
    # the interval narrows like 1/sqrt(units): four times the units, about half the width
    wide = ratio_of_sums_interval(num[:16], den[:16])
    narrow = ratio_of_sums_interval(num, den)
    assert 0.3 < (narrow.high - narrow.low) / (wide.high - wide.low) < 0.8
    with pytest.raises(ValueError, match="one numerator and one denominator"):
        ratio_of_sums_interval([1.0, 2.0], [1.0])


def test_a_patch_that_changes_nothing_skips_its_forward_with_the_same_numbers(tiny):
    """Layer 0 is the same in both models (only layer 1's MLP was perturbed): its patches write the receiver's
    own activations, so their forward passes are skipped; running them anyway gives the same sums exactly."""
    from dataclasses import replace

    from rlhf_interp.patching import Patch, run_patches
    from rlhf_interp.patching.activation import hooks_to_replace, patched

    tuned = perturbed_tiny("model.layers.1.mlp.down_proj.weight", scale=0.3, seed=1, relative=True)
    names = [h for layer in (0, 1) for h in hooks_to_replace(layer, "hook_mlp_out")]
    calls = []

    def patch(layer):
        hooks = hooks_to_replace(layer, "hook_mlp_out")

        def apply(batch):
            calls.append(layer)
            return patched(tiny, {n: batch.tuned[n] for n in hooks})
        return Patch("into_base", layer, "hook_mlp_out", apply,
                     unchanged=lambda batch: all(torch.equal(batch.base[n], batch.tuned[n]) for n in hooks))

    patches = [patch(0), patch(1)]
    skipped = run_patches(tiny, tuned, TEXTS, patches, hook_names=names, batch_size=3, return_per_text=True)
    assert calls == [1, 1]  # two batches, layer 0 never run
    forced = run_patches(tiny, tuned, TEXTS, [replace(p, unchanged=None) for p in patches], hook_names=names,
                         batch_size=3, return_per_text=True)
    assert calls == [1, 1, 0, 1, 0, 1]
    pd.testing.assert_frame_equal(skipped[1], forced[1])
    assert skipped[0]["fraction_recovered"].tolist() == [0.0, 1.0]
