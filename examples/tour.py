# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A first hour with rlhf_interp
#
# Train a policy with PPO and a KL penalty, then look inside it: where the change lives, whether a steering
# vector or an ablation can do the same job, which pieces cause it, and what each way of changing the model
# buys per nat of KL. Everything below is the public API (`rlhf_interp`, `rlhf_interp.ppo`,
# `rlhf_interp.patching`, `rlhf_interp.frontier`, `rlhf_interp.report.plots`); every analysis returns a
# DataFrame and every figure is returned for inline display.
#
# The task is ARENA's: reward = the number of `.` in the continuation. On the embedded SmolLM2-135M-Instruct
# this notebook runs top to bottom in under 10 minutes on a 2-core CPU (a few PPO phases only; point
# `RLHF_INTERP_TOUR_RUN` at a longer run, e.g. `runs/periods` from the README, for a clearer picture).
# `RLHF_INTERP_TOUR_MODEL=tiny-test` runs the same cells on a tiny random model in seconds (the test suite does).

# %%
import os
import time
from pathlib import Path

import pandas as pd
import torch

from rlhf_interp import (Steering, ablation_sweep, diff_models, finetuning_direction, generate, kl_shift,
                         list_checkpoints, load_model, load_prompts, steering_sweep)
from rlhf_interp.frontier import checkpoint_points, evaluate_best_of_n, frontier_figure, read_run, scale_to_residual
from rlhf_interp.patching import activation_patching
from rlhf_interp.ppo import PPOConfig, PPOTrainer
from rlhf_interp.report.plots import (plot_ablation_sweep, plot_diff_by_layer, plot_diff_heatmap,
                                      plot_steering_sweep, plot_token_shifts)

MODEL = os.environ.get("RLHF_INTERP_TOUR_MODEL", "smollm2-135m")   # the one switch: "tiny-test" in the tests
TINY = MODEL == "tiny-test"
RUN = Path(os.environ.get("RLHF_INTERP_TOUR_RUN", f"runs/tour_{MODEL}"))
REWARD = "char_count"          # number of "." in the continuation (reward_kwargs default: char=".")
NEW_TOKENS = 8 if TINY else 16
prompts = load_prompts(limit=4 if TINY else 16, seed=0)          # for diffs, vectors, patching
held_out = load_prompts(limit=4 if TINY else 12, seed=1)[::-1]   # for sampled rewards and KLs
held_out = [p for p in held_out if p not in prompts] or held_out
start = time.perf_counter()
print(f"model {MODEL}, run {RUN}, torch threads {torch.get_num_threads()}")

# %% [markdown]
# ## 1. The base model
# `load_model` returns a TransformerLens 4 `TransformerBridge`; `generate` samples on it (hooks and edits stay on).
# Look at how many periods a continuation has before any training: that is the reward PPO will push up.

# %%
base = load_model(MODEL, frozen=True)
print(base.cfg.n_layers, "layers, d_model", base.cfg.d_model)
generate(base, prompts[:3], max_new_tokens=NEW_TOKENS, seed=0).texts

# %% [markdown]
# ## 2. A PPO run with a KL penalty
# If `RUN` holds no checkpoint yet, train a few phases (the exact KL(π‖ref) as a loss term, an adaptive
# coefficient; first third of the blocks frozen). The per-phase metrics come back as a DataFrame: look at
# `reward_mean` rising while the exact per-token KL stays small.

# %%
if not list_checkpoints(RUN):
    config = PPOConfig(model=MODEL, reward=REWARD, reward_kwargs={"char": "."}, phases=2 if TINY else 8,
                       batch_size=4 if TINY else 8, minibatch_size=4, max_new_tokens=NEW_TOKENS, ppo_epochs=2,
                       kl_estimator="exact", kl_placement="loss", kl_coef=0.5, adaptive_kl=True, kl_target=0.1,
                       normalize_reward=True, lr=2e-4, head_lr=1e-3, freeze_layers=base.cfg.n_layers // 3,
                       checkpoint_every=2 if TINY else 4, sample_every=100)
    trainer = PPOTrainer(config, RUN)
    trainer.train()
    del trainer
metrics = pd.read_json(RUN / "metrics.jsonl", lines=True)
metrics.filter(regex=r"^(phase|reward_mean|kl_.*per_token|entropy|seconds)$")

# %% [markdown]
# Each checkpoint is a plain Hugging Face directory; `load_model` takes the run directory (its latest
# checkpoint) or one checkpoint.

# %%
run = read_run(RUN)
tuned = load_model(run.checkpoints[max(run.checkpoints)], frozen=True)
print({step: path.name for step, path in run.checkpoints.items()})
generate(tuned, prompts[:3], max_new_tokens=NEW_TOKENS, seed=0).texts

# %% [markdown]
# ## 3. Where the change lives: residual diff and logit lens
# `diff_models` streams base and tuned over the same tokens. In the first figure look for the layer where
# ‖tuned − base‖/‖base‖ starts to grow (frozen blocks are exactly 0).

# %%
d = diff_models(base, tuned, prompts, analyses=("residual", "directions", "output"), watch_tokens=["."])
resid = d.residual[d.residual["hook"].isin(["hook_resid_post", "hook_attn_out", "hook_mlp_out"])]
plot_diff_by_layer(resid, "rel_diff_norm", title="where the residual stream changed")

# %% [markdown]
# The logit lens reads a layer's mean difference through the unembedding: which tokens does the change promote
# at the layer where it is largest? Look for `.`, and for its rank at every layer in the second table.

# %%
post = d.residual[d.residual["hook"] == "hook_resid_post"]
peak = int(post.loc[post["rel_diff_norm"].idxmax(), "layer"])
lens = d.logit_lens
lens[(lens["layer"] == peak) & (lens["model"] == "tuned") & (lens["kind"] == "promoted")].head(10)

# %%
d.logit_lens_tokens.tail(8)

# %% [markdown]
# The tokens whose next-token probability moved most between base and tuned (on the same text).

# %%
plot_token_shifts(d.token_shifts, k=8)

# %% [markdown]
# ## 4. A steering vector from the fine-tuning direction, and its KL shift
# `finetuning_direction` is the mean tuned − base activation per layer; `scale_to_residual` rescales it so
# coefficient 1 is a push as large as the residual stream. `kl_shift` returns one row per (prompt, position):
# look at the mean KL(edited‖base) per token.

# %%
raw_vec = finetuning_direction(base, tuned, prompts)
vec, dropped = scale_to_residual(base, raw_vec, prompts)
layer = max(vec.layers, key=lambda l: float(raw_vec[l].norm()))   # where the mean difference is largest
steer = Steering(vec, layers=[layer], coef=0.25)
shift = kl_shift(base, steer, prompts)
print(f"steering at layer {layer}: mean KL(edited||base) {shift['kl_pi_ref'].mean():.4f} nats/token "
      f"over {len(shift)} positions")
shift.head()

# %% [markdown]
# A sweep over layers x coefficients samples from the steered model on held-out prompts (the same seed for every
# setting): reward and KL per sequence. Look at whether the reward rises before the KL explodes.

# %%
kw = dict(max_new_tokens=NEW_TOKENS, seed=0)
layers = sorted({layer, vec.layers[len(vec.layers) // 2]})
sweep = steering_sweep(base, vec, layers=layers, coefs=[0, 0.1, 0.25, 0.5], prompts=held_out, reward=REWARD, **kw)
plot_steering_sweep(sweep, reward_label="periods per continuation")

# %% [markdown]
# ## 5. An ablation
# Mean-ablate each MLP of the tuned model's last blocks (the mean over `prompts`) and measure what it costs in
# KL and reward: a large KL with little reward change means the MLP matters for everything, not the task.

# %%
targets = [f"{l}.mlp" for l in range(max(0, base.cfg.n_layers - 3), base.cfg.n_layers)]
abl = ablation_sweep(tuned, targets, held_out, REWARD, kind="mean", reference_prompts=prompts, **kw)
plot_ablation_sweep(abl)

# %% [markdown]
# ## 6. Causal patching: which piece of the tuned model makes base behave like tuned?
# Patch each layer's attention output, MLP output and residual stream from tuned into base (on 8 prompts);
# `fraction_recovered` = 1 − KL(patched‖tuned)/KL(base‖tuned). Look for the first layer whose residual
# recovers (nearly) all of it, and whether any single sublayer does.

# %%
patch = activation_patching(base, tuned, prompts[:8], components=("hook_attn_out", "hook_mlp_out", "hook_resid_post"),
                            directions=("into_base",))
plot_diff_heatmap(patch[patch["layer"] >= 0], row="component", col="layer", value="fraction_recovered",
                  title="fraction of KL(base||tuned) recovered by patching tuned into base")

# %% [markdown]
# ## 7. One equal-KL axis: steering vs the PPO checkpoints vs best-of-n
# Every method is measured the same way on the held-out prompts: sample from the changed model, score the
# reward, sum the exact per-token KL(changed‖base) along each sample (`evaluate_edit`; the steering points are
# the sweep's, coefficient 0 is the base model). Look at which method buys the most reward per nat.

# %%
steered = sweep[sweep["layer"] == layer]
points = [steered[steered["coef"] == 0].assign(kind="base", method="base model"),
          steered[steered["coef"] > 0].assign(kind="steering", method="steering: fine-tuning direction"),
          checkpoint_points(base, run, held_out, REWARD, **kw).assign(kind="fine-tuning")]
bon, _, _ = evaluate_best_of_n(base, held_out, REWARD, ns=(1, 2, 4) if TINY else (1, 2, 4, 8), **kw)
points.append(bon.rename(columns={"kl_mean": "kl_exact_mean", "kl_stderr": "kl_exact_stderr"})
              .assign(kind="best-of-n", method="best-of-n"))
points = pd.concat(points, ignore_index=True)
points[["kind", "method", "layer", "coef", "step", "n", "reward_mean", "reward_stderr", "kl_exact_mean"]]

# %%
frontier_figure(points, reward_label="periods per continuation")

# %% [markdown]
# That is the tour. The README lists the CLI for each step and the full analyses behind `reports/`; the API
# reference has every public name.

# %%
print(f"tour finished in {time.perf_counter() - start:.0f} s wall, {time.process_time():.0f} s CPU "
      f"({torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f})")
