"""Many runs diffed against one base: each run's change found where it was made, nothing where it was not."""

from __future__ import annotations

import torch

from rlhf_interp import load_model, load_prompts, save_hf_model
from rlhf_interp.diff.across_runs import where_change_lives

PROMPTS = load_prompts(limit=4, seed=0)


def _saved_copy(tmp_path, name: str, mlp_layer: int | None):
    """tiny-test saved as a model directory, with layer ``mlp_layer``'s MLP down-projection perturbed."""
    model = load_model("tiny-test", device="cpu")
    if mlp_layer is not None:
        w = model.original_model.model.layers[mlp_layer].mlp.down_proj.weight
        with torch.no_grad():
            w.add_(0.5 * torch.randn(w.shape, generator=torch.Generator().manual_seed(mlp_layer)))
    out = tmp_path / name
    save_hf_model(model, model.tokenizer, out)
    return out


def test_each_run_changes_only_where_it_was_edited(tiny, tmp_path):
    runs = {"same": _saved_copy(tmp_path, "same", None), "mlp1": _saved_copy(tmp_path, "mlp1", 1)}
    tables = where_change_lives(tiny, runs, PROMPTS, batch_size=2)
    res = tables["residual"].set_index(["run", "layer"])["rel_diff_norm"]
    assert (res.loc["same"] == 0).all()
    assert (res.loc[("mlp1", 0)] == 0) and res.loc[("mlp1", 1)] > 0  # the residual after block 1 moved, not before
    w = tables["weights"].set_index(["run", "layer", "group"])["rel_diff_norm"]
    assert (w.loc["same"] == 0).all()
    moved = tables["weights"][(tables["weights"].run == "mlp1") & (tables["weights"].diff_norm > 0)]
    assert moved[["layer", "group"]].values.tolist() == [[1, "mlp"]]
    # the pooled relative norm is the perturbation's norm over the layer's MLP weights, computed directly
    mlp = tiny.original_model.model.layers[1].mlp
    delta = 0.5 * torch.randn(mlp.down_proj.weight.shape, generator=torch.Generator().manual_seed(1))
    expected = delta.double().norm() / torch.sqrt(sum(p.double().pow(2).sum() for p in mlp.parameters()))
    assert abs(w.loc[("mlp1", 1, "mlp")] - expected.item()) < 1e-4
