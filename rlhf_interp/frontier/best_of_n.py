"""Best-of-n sampling: draw n continuations from the base model, keep the one the reward likes best.

Why it is on the frontier: it is the baseline that needs no training and no edit, and its KL from the
base model is known in closed form. For a reward without ties, the best-of-n policy is
``pi_n(y) = n F(r(y))^(n-1) p(y)`` (F: the reward's CDF under the base model p), so

    KL(pi_n || p) = E_{pi_n}[log n + (n-1) log F] = log n - (n-1)/n

(F of the best of n is Beta(n, 1), whose log has mean -1/n). Ties (a discrete reward such as a count)
make the true KL smaller; the formula is then an upper bound (Beirami et al. 2024).

Measured KL. ``pi_n / p`` depends on y only through its reward, ``g(r) = (F(r)^n - F(r-)^n) / (F(r) - F(r-))``
(``n F^(n-1)`` when the level has no mass), so ``KL = E_{pi_n}[log g(r)]``. We estimate it per prompt
from real samples: the pool of ``pool_size`` base samples is cut into groups of n; each group's best is a
draw from ``pi_n``; the *other* samples of the pool are independent draws from p that estimate ``F`` at
the pick (``log F`` without bias when no other sample ties with the pick; see `log_density_ratio`).
Per-prompt estimates give a standard error over prompts.

Reward. The expected best-of-n reward per prompt uses every sample of the pool through the unbiased
estimator of the expected maximum of n draws without replacement (Gao et al. 2022, appendix):
``sum_i C(i-1, n-1) / C(m, n) r_(i)`` over the sorted rewards ``r_(1) <= ... <= r_(m)``.

The KL here is a sequence-level quantity of a sampling procedure: there is no per-token policy, so
`rlhf_interp.measure`'s per-token machinery does not apply; both numbers are in nats per sequence like
the per-sequence KL of every other method.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from rlhf_interp.bridge import generate
from rlhf_interp.core.seeding import mix_seed
from rlhf_interp.reward import get_reward, score


def analytic_kl(n: int) -> float:
    """``log n - (n-1)/n``: the best-of-n KL for a reward without ties (an upper bound otherwise)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}.")
    return math.log(n) - (n - 1) / n


def expected_best(rewards: Sequence[float], n: int) -> float:
    """Unbiased estimate of E[max of n draws] from m >= n samples (draws without replacement)."""
    r = np.sort(np.asarray(rewards, dtype=float))
    m = len(r)
    if n > m:
        raise ValueError(f"Cannot estimate best-of-{n} from {m} samples; draw at least n.")
    weights = np.array([math.comb(i - 1, n - 1) / math.comb(m, n) for i in range(1, m + 1)])
    return float(weights @ r)


def unbiased_log_cdf(above: int, m: int) -> float:
    """Unbiased estimate of ``log F`` from ``above`` of ``m`` i.i.d. reference draws exceeding the point.

    ``log F = -sum_k (1 - F)^k / k`` and ``C(above, k) / C(m, k)`` is unbiased for ``(1 - F)^k`` (``above`` is
    Binomial(m, 1 - F)); the series is cut at ``k = m``, whose remainder is negligible for best-of-n picks
    (F near 1). The plug-in ``log((m - above + 1) / (m + 1))`` overstates the KL by ~10% at n = 2, m = 30.
    """
    return -sum(math.comb(above, k) / math.comb(m, k) / k for k in range(1, above + 1))


def log_density_ratio(pick: float, others: np.ndarray, n: int) -> float:
    """``log g(r)`` for a best-of-n pick with reward ``pick``, F estimated from the ``others`` (reference draws).

    No other draw has the pick's reward (a continuous reward): ``log n + (n-1) log F`` with the unbiased
    `unbiased_log_cdf`. Ties: the plug-in ``log((F^n - F-^n) / (F - F-))`` with the pick counted among the
    draws (so the level's mass is never 0).
    """
    others = np.asarray(others, dtype=float)
    below = int(np.sum(others < pick))
    equal = int(np.sum(others == pick))
    if equal == 0:
        return math.log(n) + (n - 1) * unbiased_log_cdf(len(others) - below, len(others))
    m = len(others) + 1
    f_hi, f_lo = (below + equal + 1) / m, below / m  # F(r) and F(r-), the pick counted at its level
    return math.log((f_hi ** n - f_lo ** n) / (f_hi - f_lo))


def measured_kl(pool: Sequence[float], n: int) -> tuple[float, int]:
    """Mean ``log g`` over the best of each disjoint group of n in ``pool`` (the rest of the pool is the
    reference for each group), and the number of groups. Needs ``len(pool) >= 2n``."""
    pool = np.asarray(pool, dtype=float)
    groups = len(pool) // n
    if groups < 1 or len(pool) - n < 1:
        raise ValueError(f"Measuring the best-of-{n} KL needs a pool of at least {2 * n} samples per prompt "
                         f"(groups of {n} plus others to estimate F); got {len(pool)}.")
    values = []
    for j in range(groups):
        inside = np.zeros(len(pool), dtype=bool)
        inside[j * n:(j + 1) * n] = True
        values.append(log_density_ratio(float(pool[inside].max()), pool[~inside], n))
    return float(np.mean(values)), groups


def sample_pool(model, prompts: Sequence[str], reward: str | Callable, *, pool_size: int = 64,
                max_new_tokens: int = 24, seed: int = 0, batch_size: int = 64, temperature: float = 1.0
                ) -> pd.DataFrame:
    """``pool_size`` base-model samples per prompt, scored. One row per sample: prompt_idx, sample,
    continuation, reward. Sampling is chunked (``batch_size`` sequences a call) with derived seeds."""
    reward_fn = get_reward(reward) if not callable(reward) else reward
    jobs = [(i, s) for i in range(len(prompts)) for s in range(pool_size)]
    rows = []
    for chunk_no, start in enumerate(range(0, len(jobs), batch_size)):
        chunk = jobs[start:start + batch_size]
        gen = generate(model, [prompts[i] for i, _ in chunk], max_new_tokens=max_new_tokens,
                       seed=mix_seed(seed, chunk_no), temperature=temperature)
        values = score(reward_fn, gen.texts).tolist()
        rows.extend({"prompt_idx": i, "sample": s, "continuation": text, "reward": value}
                    for (i, s), text, value in zip(chunk, gen.texts, values))
    return pd.DataFrame(rows)


def best_of_n_table(pool: pd.DataFrame, ns: Sequence[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From a scored pool (`sample_pool`): per prompt and n, the expected best-of-n reward and the
    measured KL; and the summary per n (means with standard errors over prompts, the analytic KL).

    Summary columns: n, reward_mean, reward_stderr, kl_mean, kl_stderr (measured), kl_analytic,
    n_prompts, groups_per_prompt, pool_size.
    """
    per_prompt = []
    for idx, group in pool.groupby("prompt_idx", sort=True):
        rewards = group.sort_values("sample")["reward"].to_numpy()
        for n in ns:
            kl, groups = measured_kl(rewards, n)
            per_prompt.append({"prompt_idx": idx, "n": n, "reward": expected_best(rewards, n), "kl": kl,
                               "groups": groups, "pool_size": len(rewards)})
    per_prompt = pd.DataFrame(per_prompt)
    summary = []
    for n, g in per_prompt.groupby("n", sort=True):
        k = len(g)
        summary.append({
            "n": int(n),
            "reward_mean": float(g["reward"].mean()), "reward_stderr": float(g["reward"].std(ddof=1) / math.sqrt(k)) if k > 1 else float("nan"),
            "kl_mean": float(g["kl"].mean()), "kl_stderr": float(g["kl"].std(ddof=1) / math.sqrt(k)) if k > 1 else float("nan"),
            "kl_analytic": analytic_kl(int(n)), "n_prompts": k, "groups_per_prompt": int(g["groups"].iloc[0]),
            "pool_size": int(g["pool_size"].iloc[0]),
        })
    return pd.DataFrame(summary), per_prompt


def evaluate_best_of_n(model, prompts: Sequence[str], reward: str | Callable, ns: Sequence[int] = (1, 2, 4, 8, 16, 32), *,
              pool_size: int | None = None, max_new_tokens: int = 24, seed: int = 0, batch_size: int = 64
              ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Best-of-n for each n in ``ns`` on ``prompts``: ``(summary, per_prompt, pool)`` (see `best_of_n_table`).

    ``pool_size`` defaults to ``2 * max(ns)`` (the smallest pool that measures the largest n's KL).
    """
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise ValueError(f"best-of-n sizes must be integers >= 1, got {ns}.")
    pool_size = pool_size or 2 * ns[-1]
    if pool_size < 2 * ns[-1]:
        raise ValueError(f"pool_size {pool_size} is too small for n = {ns[-1]}: measuring its KL needs >= {2 * ns[-1]}.")
    with torch.no_grad():
        pool = sample_pool(model, prompts, reward, pool_size=pool_size, max_new_tokens=max_new_tokens, seed=seed,
                           batch_size=batch_size)
    summary, per_prompt = best_of_n_table(pool, ns)
    return summary, per_prompt, pool


__all__ = ["analytic_kl", "best_of_n_table", "evaluate_best_of_n", "expected_best", "log_density_ratio", "measured_kl",
           "sample_pool", "unbiased_log_cdf"]
