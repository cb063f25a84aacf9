"""The tables docs/kl.md reports beyond "is each gradient right": how far each option is off outside its proof's
conditions (GAE lambda < 1, a learned critic, later PPO epochs), its Monte-Carlo error at logit distances 1-3,
the sequence-level option's error by bank size, and how far the per-token KL(ref||pi) targets point from the
sequence-level one. All on the enumerable tabular policies of `rlhf_interp.ppo.kl_audit`.

Rebuild every table of docs/kl.md: ``python -m rlhf_interp.ppo.kl_audit_tables --docs docs``.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from rlhf_interp.ppo.kl_audit import (N_SAMPLES, OFF_POLICY, PROBLEMS, TabularProblem, all_sequences, audit_table,
                                      compare, drift_table, exact_critic, make_problem, sampling_distribution,
                                      sequence_logprob, state_index, summary, surrogate_gradient, true_gradient)
from rlhf_interp.ppo.kl_penalty import kl_options

REWARD_OPTIONS = [(d, e) for d, e, p, ok in kl_options() if ok and p == "reward"]


def conditions_table(seed: int = 0, distances: tuple[float, ...] = (1.0, 2.0)) -> pd.DataFrame:
    """The reward placement's expected-gradient error (enumerated, no sampling noise) under each condition of its
    proof: GAE lambda (1 vs the shipped 0.95), the critic (the audit's arbitrary baseline vs the exact V^{pi_old}),
    the first minibatch (theta = theta_old) vs a later one (theta a further 0.1 or 0.3 x N(0, 1) away), and the
    shipped form (score in the own advantage) vs the variant with the local score term as an exact loss term."""
    rows = []
    for distance in distances:
        for at, off in (("first_minibatch", 0.0), ("later_0.1", 0.1), ("later_0.3", OFF_POLICY)):
            problem = make_problem(**PROBLEMS["multi_step"], seed=seed, distance=distance, off_policy=off)
            seqs = all_sequences(problem.vocab, problem.horizon)
            probs = sequence_logprob(problem.theta_old, seqs, state_index(seqs, problem.vocab)).exp()
            for direction, estimator in REWARD_OPTIONS:
                truth = true_gradient(problem, direction, "reward")
                critics = {"arbitrary": problem.baseline, "exact": exact_critic(problem, direction, estimator)}
                for lam in (1.0, 0.95):
                    for critic, baseline in critics.items():
                        for variant in ("score_in_advantage", "local_in_loss"):
                            grad = surrogate_gradient(problem, direction, estimator, "reward", seqs, probs, lam=lam,
                                                      baseline=baseline, local_in_loss=variant == "local_in_loss")
                            rows.append({"distance": distance, "theta": at, "direction": direction,
                                         "estimator": estimator, "gae_lambda": lam, "critic": critic,
                                         "variant": variant, **compare(grad, truth)})
    return pd.DataFrame(rows)


def _rms_rel_error(problem: TabularProblem, direction: str, estimator: str, placement: str, n: int, repeats: int,
                   seed: int) -> float:
    """sqrt(E|g_n - g|^2) / |g| over ``repeats`` Monte-Carlo gradients of ``n`` sequences each (g: the true one)."""
    truth = true_gradient(problem, direction, placement)
    seqs = all_sequences(problem.vocab, problem.horizon)
    probs = sequence_logprob(sampling_distribution(problem, placement), seqs, state_index(seqs, problem.vocab)).exp()
    g = torch.Generator().manual_seed(seed)
    sq = 0.0
    for _ in range(repeats):
        sample = seqs[torch.multinomial(probs, n, replacement=True, generator=g)]
        sq += float((surrogate_gradient(problem, direction, estimator, placement, sample) - truth).pow(2).sum())
    return (sq / repeats) ** 0.5 / float(truth.norm())


def variance_table(distances: tuple[float, ...] = (1.0, 2.0, 3.0), n: int = 256, repeats: int = 50,
                   seed: int = 0) -> pd.DataFrame:
    """Every accepted option's Monte-Carlo relative error (RMS over ``repeats`` batches of ``n`` sequences) at
    logit distances 1, 2, 3 between policy and reference (multi-step problem, first minibatch)."""
    rows = []
    for distance in distances:
        problem = make_problem(**PROBLEMS["multi_step"], seed=seed, distance=distance)
        for direction, estimator, placement, accepted in kl_options():
            if accepted:
                rows.append({"distance": distance, "direction": direction, "estimator": estimator,
                             "placement": placement, "n_sequences": n, "repeats": repeats,
                             "rms_rel_error": _rms_rel_error(problem, direction, estimator, placement, n, repeats,
                                                             seed)})
    return pd.DataFrame(rows)


def bank_table(sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 64), distances: tuple[float, ...] = (1.0, 2.0, 3.0),
               repeats: int = 200, seed: int = 0) -> pd.DataFrame:
    """The sequence-level KL(ref||pi) gradient's relative error by bank size (reference samples of one prompt)."""
    rows = []
    for distance in distances:
        problem = make_problem(**PROBLEMS["multi_step"], seed=seed, distance=distance)
        for estimator in ("k1", "k3", "exact"):
            for size in sizes:
                rows.append({"distance": distance, "estimator": estimator, "bank_size": size, "repeats": repeats,
                             "rms_rel_error": _rms_rel_error(problem, "ref_pi", estimator, "sequence", size, repeats,
                                                             seed)})
    return pd.DataFrame(rows)


def targets_table(distances: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0), horizons: tuple[int, ...] = (2, 3, 5),
                  seeds: int = 3) -> pd.DataFrame:
    """Cosine between the gradients of the per-token KL(ref||pi) targets (over the policy's states: reward
    placement; at the rollout's states: loss placement) and of the sequence-level KL(ref||pi)."""
    rows = []
    for horizon in horizons:
        for distance in distances:
            for seed in range(seeds):
                problem = make_problem(3, horizon, seed=seed, distance=distance)
                seq = true_gradient(problem, "ref_pi", "sequence")
                for placement in ("reward", "loss"):
                    rows.append({"horizon": horizon, "distance": distance, "seed": seed, "per_token_target": placement,
                                 "cosine_with_sequence_level": compare(true_gradient(problem, "ref_pi", placement),
                                                                       seq)["cosine"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", help="write every table into this directory (docs/kl_*.csv)")
    parser.add_argument("--csv", help="write the full table here")
    parser.add_argument("--summary-csv", help="write the one-row-per-option summary here")
    parser.add_argument("--drift-csv", help="write the repeated-steps table (why k1 is refused in the loss) here")
    parser.add_argument("--n-samples", type=int, default=N_SAMPLES)
    args = parser.parse_args(argv)
    fmt = "%.4f"
    if args.docs:
        from pathlib import Path

        out = Path(args.docs)
        args.csv, args.summary_csv, args.drift_csv = (str(out / f"kl_{x}.csv") for x in ("gradients", "summary", "drift"))
        conditions_table().to_csv(out / "kl_conditions.csv", index=False, float_format=fmt)
        variance_table().to_csv(out / "kl_variance.csv", index=False, float_format=fmt)
        bank_table().to_csv(out / "kl_sequence_bank.csv", index=False, float_format=fmt)
        targets_table().to_csv(out / "kl_targets.csv", index=False, float_format=fmt)
    if args.drift_csv:
        drift_table().to_csv(args.drift_csv, index=False, float_format=fmt)
    table = audit_table(args.n_samples)
    if args.csv:
        table.to_csv(args.csv, index=False, float_format=fmt)
    short = summary(table)
    if args.summary_csv:
        short.to_csv(args.summary_csv, index=False, float_format=fmt)
    print(short.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
