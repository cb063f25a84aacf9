"""Steering vectors: difference of means, contrastive pairs, PCA, fine-tuning direction; save/load."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch

from rlhf_interp import tokenize
from rlhf_interp.edits import (
    SteeringVector,
    contrastive,
    finetuning_direction,
    mean_difference,
    paired_differences,
    pca_direction,
)

PAIRS = [("I came. I saw. I left.", "I came, I saw, I left"), ("Stop. Look. Listen.", "Stop, look, listen"),
         ("Yes. No. Maybe.", "Yes, no, maybe"), ("It rained. We stayed in.", "It rained, we stayed in")]


def _acts(model, texts, name):
    tokens, mask = tokenize(model, texts)
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
    return cache[name], mask


def test_mean_difference_matches_manual(tiny):
    pos, neg = [p for p, _ in PAIRS], [n for _, n in PAIRS]
    sv = mean_difference(tiny, pos, neg, layers=[1], hook="resid_post", reduce="mean")
    name = "blocks.1.hook_resid_post"

    def per_text_mean(texts):
        act, mask = _acts(tiny, texts, name)
        rows = []
        for i in range(len(texts)):
            real = act[i][mask[i].bool()]
            rows.append(real[1:].mean(0))  # BOS excluded
        return torch.stack(rows).mean(0)

    torch.testing.assert_close(sv[1], per_text_mean(pos) - per_text_mean(neg), atol=1e-5, rtol=1e-5)
    assert sv.layers == [1] and sv.source == "mean_difference" and sv.model == "tiny-test"


def test_contrastive_is_mean_of_last_token_differences(tiny):
    sv = contrastive(tiny, PAIRS, layers="all", hook="attn_out")
    name = "blocks.0.hook_attn_out"
    a_pos, _ = _acts(tiny, [p for p, _ in PAIRS], name)
    a_neg, _ = _acts(tiny, [n for _, n in PAIRS], name)
    torch.testing.assert_close(sv[0], (a_pos[:, -1] - a_neg[:, -1]).mean(0), atol=1e-5, rtol=1e-5)
    assert sv.layers == [0, 1] and sv.hook == "attn_out"


def test_pca_direction_is_top_eigenvector(tiny):
    sv = pca_direction(tiny, PAIRS, layers=[0])
    diffs = paired_differences(tiny, PAIRS, layers=[0])[0].double()
    centred = diffs - diffs.mean(0)
    _, eigvecs = torch.linalg.eigh(centred.T @ centred)
    top = eigvecs[:, -1]
    unit = (sv[0] / sv[0].norm()).double()
    assert abs(float(unit @ top)) == pytest.approx(1.0, abs=1e-4)
    assert float(sv[0].double() @ diffs.mean(0)) > 0  # signed like the mean difference
    assert float(sv[0].norm()) == pytest.approx(abs(float(diffs.mean(0) @ unit)), rel=1e-4)


def test_finetuning_direction(tiny):
    prompts = ["The old lighthouse keeper", "Hi there"]
    same = finetuning_direction(tiny, tiny, prompts, layers="all")
    assert all(float(v.abs().max()) == 0.0 for v in same.vectors.values())
    tuned = deepcopy(tiny)
    with torch.no_grad():
        tuned.original_model.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    sv = finetuning_direction(tiny, tuned, prompts, layers="all")
    assert float(sv[0].abs().max()) == 0.0  # layer 0 is upstream of the change
    name = "blocks.1.hook_resid_post"
    a, mask = _acts(tiny, prompts, name)
    b, _ = _acts(tuned, prompts, name)
    keep = mask.bool().clone()
    keep[torch.arange(len(prompts)), mask.argmax(1)] = False
    torch.testing.assert_close(sv[1], (b - a)[keep].mean(0), atol=1e-5, rtol=1e-5)
    assert sv.meta["base"] == "tiny-test"
    # The diff module's streamed mean difference is the same direction.
    from rlhf_interp.diff import diff_models

    from_diff = SteeringVector.from_diff(diff_models(tiny, tuned, prompts).vectors)
    assert from_diff.layers == [0, 1] and from_diff.hook == "resid_post"
    torch.testing.assert_close(from_diff[1], sv[1], atol=1e-6, rtol=1e-5)


def test_save_load_roundtrip(tiny, tmp_path):
    sv = contrastive(tiny, PAIRS, layers=[0, 1])
    path = sv.save(tmp_path / "period.safetensors")
    back = SteeringVector.load(path)
    assert back.layers == [0, 1] and back.hook == sv.hook and back.source == "contrastive"
    assert back.model == "tiny-test" and back.meta["n_pairs"] == len(PAIRS)
    assert all(torch.equal(back[k], sv[k]) for k in sv.layers)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SteeringVector.load(tmp_path / "missing.safetensors")


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match=r"\(positive, negative\)"):
        contrastive(tiny, [("only one",)], layers=[0])
    with pytest.raises(ValueError, match="Unknown hook"):
        mean_difference(tiny, ["a"], ["b"], layers=[0], hook="residual")
    with pytest.raises(ValueError, match="has 2 layers"):
        mean_difference(tiny, ["a"], ["b"], layers=[3])
