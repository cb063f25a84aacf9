"""GRPO, RLOO and DPO beside PPO (rlhf_interp/ppo/algorithms/): config refusals, the group advantages, the
KL options each accepts estimating the gradient of the KL they name (float64, enumerated, as
tests/test_kl_gradients.py does for PPO), the algorithms training on tiny-test, and SIGKILL + resume reproducing
the uninterrupted run for each of them (as tests/test_crash_safety.py does for PPO)."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest
import torch

from rlhf_interp.ppo import PPOConfig, kl_audit
from rlhf_interp.ppo.algorithms import ALGORITHMS, Minibatch, UpdateContext, get_algorithm
from rlhf_interp.ppo.algorithms.dpo import dpo_loss, phase_pairs
from rlhf_interp.ppo.algorithms.grpo import group_relative_advantages
from rlhf_interp.ppo.algorithms.rloo import leave_one_out_advantages
from rlhf_interp.ppo.kl_penalty import KLPenalty, kl_options
from rlhf_interp.core.kl import kl_reward_terms

# tests/test_crash_safety.py's fork server (a module fixture): the kill tests' runs are real processes forked from
# one interpreter that has made the child script's imports, so none pays ~6 s CPU of imports.
from test_crash_safety import server  # noqa: F401

GROUP_ALGORITHMS = ("grpo", "rloo")
# The placements whose gradient these tests prove per algorithm (the sequence placement's bank term does not pass
# through the advantages: tests/test_kl_gradients.py covers it for every algorithm alike).
CASES = [(alg, name, at, (d, e, p)) for alg in GROUP_ALGORITHMS for name in kl_audit.PROBLEMS
         for d, e, p, ok in kl_options() if ok and p in ("reward", "loss") and p in ALGORITHMS[alg].penalty_placements
         for at in ("on_policy", "off_policy") if not (at == "off_policy" and p == "reward")]


# --- config


def test_algorithm_is_validated_and_group_options_are_refused_with_reasons(tmp_path):
    with pytest.raises(ValueError, match="algorithm"):
        PPOConfig(algorithm="a2c").validate()
    for alg in GROUP_ALGORITHMS:
        with pytest.raises(ValueError, match="at least 2 samples per prompt"):
            PPOConfig(algorithm=alg, group_size=1, kl_placement="loss", kl_estimator="k3").validate()
        with pytest.raises(ValueError, match="must divide batch_size"):
            PPOConfig(algorithm=alg, group_size=3, kl_placement="loss", kl_estimator="k3").validate()
    with pytest.raises(ValueError, match="refused with algorithm 'grpo'.*kl_placement: 'loss'"):
        PPOConfig(algorithm="grpo", group_size=4).validate()  # default placement: reward
    PPOConfig(algorithm="rloo", group_size=4).validate()  # k1 in the reward: RLOO's own
    with pytest.raises(ValueError, match="preference_data"):
        PPOConfig(algorithm="dpo", kl_coef=0).validate()
    with pytest.raises(ValueError, match="dpo_beta"):
        PPOConfig(algorithm="dpo", preference_data="pairs.jsonl").validate()  # kl_coef 0.1
    for name in ("periods_grpo", "periods_rloo", "periods_dpo"):
        assert PPOConfig.load(f"configs/{name}.yaml").algorithm == name.split("_")[1]


# --- advantages


def test_group_advantages_by_hand():
    scores = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, 4.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    zeros = torch.zeros(6, 2)
    rloo = leave_one_out_advantages(scores, zeros, zeros, mask, 0.0, group_size=3)
    # group 1: 1 - mean(3, 2) = -1.5; 3 - 1.5 = 1.5; 2 - 2 = 0. group 2: 2 - 2 = 0; 0 - 3 = -3; 4 - 1 = 3
    torch.testing.assert_close(rloo[:, 0], torch.tensor([-1.5, 1.5, 0.0, 0.0, -3.0, 3.0]))
    assert rloo[1, 1] == 0  # masked
    dr = group_relative_advantages(scores, mask, group_size=3, scale=False)
    torch.testing.assert_close(dr[:, 0], torch.tensor([-1.0, 1.0, 0.0, 0.0, -2.0, 2.0]))
    grpo = group_relative_advantages(scores, mask, group_size=3, scale=True)
    torch.testing.assert_close(grpo[:, 0], dr[:, 0] / (torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0]) + 1e-4))
    same = group_relative_advantages(torch.ones(4), torch.ones(4, 2), group_size=2, scale=True)
    assert (same == 0).all()  # equal scores teach nothing (and do not divide by 0)
    # the KL in RLOO's reward: the penalised return's leave-one-out advantage, plus the own-token correction
    value, score = torch.tensor([[0.5, 0.5], [0.0, 0.0]]), torch.tensor([[1.0, 0.5], [0.0, 0.0]])
    out = leave_one_out_advantages(torch.zeros(2), value, score, torch.ones(2, 2), 1.0, group_size=2)
    torch.testing.assert_close(out, torch.tensor([[-1.0 - 0.5, -1.0], [1.0, 1.0]]))


# --- the KL's gradient through each algorithm's advantages and loss (float64, enumerated)


def _surrogate(problem, alg: str, option, groups: torch.Tensor, weights: torch.Tensor | None, scale: bool = True
               ) -> torch.Tensor:
    """Gradient at ``problem.theta`` of the algorithm's loss on ``groups`` [G, k, horizon] of sequences sampled
    from pi_old, reward 0 (so only the KL acts), through the very functions the trainer calls."""
    direction, estimator, placement = option
    n_groups, k, horizon = groups.shape
    tokens = groups.reshape(-1, horizon)
    states = kl_audit.state_index(tokens, problem.vocab)
    theta = problem.theta.clone().requires_grad_(True)
    logp_all = torch.log_softmax(theta, -1)[states]
    ref_all = torch.log_softmax(problem.ref, -1)[states]
    old_all = torch.log_softmax(problem.theta_old, -1)[states]
    logp, logref, logp_old = (x.gather(-1, tokens[..., None]).squeeze(-1) for x in (logp_all, ref_all, old_all))
    mask = torch.ones_like(logp)
    penalty = KLPenalty(direction=direction, estimator=estimator, placement=placement, coef=1.0)
    with torch.no_grad():
        value, score = kl_reward_terms(logp, logref, direction=direction, estimator=estimator, logp_all=logp_all,
                                       ref_logp_all=ref_all) if placement == "reward" else (mask * 0, mask * 0)
    algorithm = get_algorithm(alg) if isinstance(alg, str) else alg
    config = SimpleNamespace(group_size=k, whiten_advantages=False, grpo_scale_rewards=scale, clip_range=0.2,
                             entropy_coef=0.0)
    rollout = SimpleNamespace(kl_value=value, kl_score=score, gen_mask=mask)
    advantages, _ = algorithm.advantages(torch.zeros(len(tokens), dtype=torch.float64), rollout,
                                         penalty.reward_coef(1.0), config, None)
    weighted = mask if weights is None else weights.repeat_interleave(k)[:, None].expand_as(mask)
    batch = Minibatch(mask=weighted, logp_all=logp_all, logprobs=logp, old_logprobs=logp_old.detach(),
                      ref_logprobs=logref, advantages=advantages, ref_logp_all=ref_all)
    ctx = UpdateContext(None, None, config, kl_penalty=None if penalty.in_reward else penalty)
    loss, _ = algorithm.loss(batch, 1.0, ctx)
    return torch.autograd.grad(loss, theta)[0]


def _all_groups(problem, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every group of k sequences and its probability under pi_old."""
    seqs = kl_audit.all_sequences(problem.vocab, problem.horizon)
    probs = kl_audit.sequence_logprob(problem.theta_old, seqs, kl_audit.state_index(seqs, problem.vocab)).exp()
    index = torch.tensor(list(itertools.product(range(len(seqs)), repeat=k)))
    return seqs[index], probs[index].prod(-1)


def _problem(name: str, at: str):
    return kl_audit.make_problem(**kl_audit.PROBLEMS[name],
                                 off_policy=kl_audit.OFF_POLICY if at == "off_policy" else 0.0)


@pytest.mark.parametrize("alg,name,at,option", CASES, ids=["-".join((a, n, t, *o)) for a, n, t, o in CASES])
def test_accepted_kl_option_estimates_the_named_gradient(alg, name, at, option):
    problem = _problem(name, at)
    truth = kl_audit.true_gradient(problem, option[0], option[2])
    groups, weights = _all_groups(problem, k=2)  # every pair of sequences: the exact expectation
    expected = kl_audit.compare(_surrogate(problem, alg, option, groups, weights), truth)
    assert expected["cosine"] > 1 - 1e-9 and expected["rel_error"] < 1e-6, expected
    # usable: a Monte-Carlo mean over 25,000 groups of 4
    seqs = kl_audit.all_sequences(problem.vocab, problem.horizon)
    probs = kl_audit.sequence_logprob(problem.theta_old, seqs, kl_audit.state_index(seqs, problem.vocab)).exp()
    g = torch.Generator().manual_seed(0)
    sample = seqs[torch.multinomial(probs, 100_000, replacement=True, generator=g)].view(25_000, 4, -1)
    mc = kl_audit.compare(_surrogate(problem, alg, option, sample, None), truth)
    assert mc["cosine"] >= 0.99 and mc["rel_error"] <= 0.1, mc


def test_grpo_baseline_would_scale_a_kl_in_the_reward():
    """Why GRPO refuses the KL in the reward: the group mean includes the sample itself, so the expected gradient
    is (k-1)/k of the KL's (Dr. GRPO, no std), and dividing by the group's std changes its direction too."""
    from rlhf_interp.ppo.algorithms.grpo import GRPO

    class GRPOWithKLReward(GRPO):  # what accepting the reward placement would do: GRPO's baseline on R = -sum v
        def advantages(self, scores, rollout, kl_coef, config, dist):
            returns = scores - kl_coef * rollout.kl_value.sum(-1)
            own = kl_coef * (rollout.kl_score - rollout.kl_value)
            return group_relative_advantages(returns, rollout.gen_mask, config.group_size,
                                             config.grpo_scale_rewards) - own, None

    problem = _problem("multi_step", "on_policy")
    option = ("pi_ref", "k1", "reward")  # k1: score = value, no own-token correction
    truth = kl_audit.true_gradient(problem, "pi_ref", "reward")
    groups, weights = _all_groups(problem, k=2)
    unscaled = _surrogate(problem, GRPOWithKLReward(), option, groups, weights, scale=False)
    torch.testing.assert_close(unscaled, 0.5 * truth)
    scaled = kl_audit.compare(_surrogate(problem, GRPOWithKLReward(), option, groups, weights, scale=True), truth)
    assert scaled["cosine"] < 0.999, scaled
    rloo = kl_audit.compare(_surrogate(problem, "rloo", option, groups, weights), truth)
    assert rloo["rel_error"] < 1e-6  # the leave-one-out baseline is unbiased


# --- DPO


def test_dpo_loss_and_pair_order():
    zero = torch.zeros(3)
    loss, stats = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # pi = ref: log 2
    loss, stats = dpo_loss(torch.tensor([1.0]), torch.tensor([-1.0]), zero[:1], zero[:1], beta=0.5)
    assert stats["dpo_margin"].item() == pytest.approx(1.0) and loss.item() == pytest.approx(
        -torch.nn.functional.logsigmoid(torch.tensor(1.0)).item())
    pairs = tuple(range(10))
    seen = [p for phase in range(5) for p in phase_pairs(pairs, 0, phase, 4)]  # two passes over 10 pairs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert phase_pairs(pairs, 0, 3, 4) == phase_pairs(pairs, 0, 3, 4)  # a resumed phase takes the same pairs


def write_pairs(path, n: int = 12) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Note {i}:", "chosen": " Yes. It is. Done.", "rejected": " yes it is and"})
                    + "\n")
    return str(path)


# --- training on tiny-test, and SIGKILL + resume


TINY = ["model=tiny-test", "reward=length", "reward_kwargs={unit: chars}", "batch_size=4", "minibatch_size=2",
        "max_new_tokens=8", "ppo_epochs=2", "lr=1e-3", "seed=3"]


def overrides(alg: str, pairs: str) -> list[str]:
    if alg == "dpo":
        return [*TINY, "algorithm=dpo", f"preference_data={pairs}", "kl_coef=0", "dpo_beta=0.5"]
    return [*TINY, f"algorithm={alg}", "group_size=2", "kl_placement=loss", "kl_estimator=k3", "kl_coef=0.1"]


@pytest.mark.parametrize("alg", ["grpo", "rloo", "dpo"])
def test_algorithm_trains_and_logs_the_common_metrics(tmp_path, alg):
    from rlhf_interp.ppo import PPOTrainer

    config = PPOConfig.load(None, [*overrides(alg, write_pairs(tmp_path / "pairs.jsonl")), "phases=2",
                                   "checkpoint_every=2"])
    trainer = PPOTrainer(config, tmp_path / "run", progress=False)
    before = {k: v.detach().clone() for k, v in trainer.hf_policy.named_parameters()}
    metrics = trainer.train()
    for key in ("reward_mean", "kl_pi_ref_per_token", "kl_ref_pi_per_token", "entropy", "policy_loss", "grad_norm"):
        assert key in metrics[-1], key
    assert "value_loss" not in metrics[-1]  # critic-free
    if alg == "dpo":
        assert metrics[-1]["dpo_accuracy"] >= 0.0
    moved = any(not torch.equal(p, before[k]) for k, p in trainer.hf_policy.named_parameters())
    assert moved
    assert (tmp_path / "run" / "checkpoint-000002" / "model.safetensors").exists()
    if alg != "dpo":  # group sampling: every prompt group_size times in a row
        prompts = trainer._phase_prompts()
        assert prompts[0] == prompts[1] and prompts[2] == prompts[3]


def _crash_child(alg: str, pairs: str) -> str:
    """tests/test_crash_safety.py's child process, running ``alg`` instead of PPO."""
    import test_crash_safety as crash

    return crash.CHILD.replace(
        'OVERRIDES = ["model=tiny-test"',
        f'OVERRIDES = {overrides(alg, pairs)!r} + ["phases=6", "checkpoint_every=2", "sample_every=1", '
        f'"keep_checkpoints=2"]\n_UNUSED = ["model=tiny-test"')


@pytest.fixture(scope="module")
def uninterrupted_runs(tmp_path_factory, server):
    """One uninterrupted run per algorithm, made when first asked for and shared by that algorithm's kill tests."""
    import test_crash_safety as crash

    made: dict[str, tuple] = {}

    def get(alg: str):
        if alg not in made:
            tmp = tmp_path_factory.mktemp(f"{alg}_full")
            pairs = write_pairs(tmp / "pairs.jsonl")
            original, crash.CHILD = crash.CHILD, _crash_child(alg, pairs)
            try:
                assert crash._run(server, tmp / "full", "fresh") == 0
            finally:
                crash.CHILD = original
            made[alg] = (tmp / "full", pairs)
        return made[alg]

    return get


# Every algorithm is killed mid-phase (its own state: group sampling, DPO's pair order, the optimizer part-way);
# the checkpoint and log mechanics a second kill point exercises are the run directory's, shared by all of them
# and covered kill point by kill point for PPO in tests/test_crash_safety.py, so one algorithm repeats them here.
KILL_CASES = [("grpo", ["mid_phase:5"]), ("rloo", ["mid_phase:5"]), ("dpo", ["mid_phase:5"]),
              ("grpo", ["before_checkpoint:4", "torn_log:5"])]


@pytest.mark.parametrize("alg,kills", KILL_CASES, ids=["+".join(ks) + "-" + a for a, ks in KILL_CASES])
def test_sigkill_then_resume_writes_the_uninterrupted_files(tmp_path_factory, server, uninterrupted_runs, alg, kills):
    import test_crash_safety as crash

    full, pairs = uninterrupted_runs(alg)
    tmp = tmp_path_factory.mktemp(f"{alg}")
    crash.CHILD, original = _crash_child(alg, pairs), crash.CHILD
    try:
        run = tmp / "run"
        assert crash._run(server, run, "fresh", kills[0]) == -9
        for spec in kills[1:]:
            assert crash._run(server, run, "resume", spec) == -9
        assert crash._run(server, run, "resume") == 0
        crash.assert_same_outputs(full, run)
    finally:
        crash.CHILD = original


def test_group_baselines_see_the_whole_batch_across_processes():
    """With several processes a group can be split between them: each process's advantages are computed over the
    gathered global batch and its own rows kept, so they equal the one-process advantages row for row."""
    from rlhf_interp.ppo.algorithms.base import over_global_batch

    torch.manual_seed(0)
    scores, mask = torch.randn(8), (torch.rand(8, 5) > 0.2).float()
    value, score = torch.rand(8, 5) * mask, torch.rand(8, 5) * mask
    whole_rloo = leave_one_out_advantages(scores, value, score, mask, 0.3, group_size=4)
    whole_grpo = group_relative_advantages(scores, mask, group_size=4, scale=True)

    class Rank:  # what `Distributed` does for a 2-process run of contiguous blocks of 4 rows (rank r: 4r..4r+3)
        active, world_size = True, 2

        def __init__(self, rank):
            self.rank = rank

        def gather(self, t):
            return full[id(t)]  # every process's rows, in rank order

    for rank in (0, 1):
        rows = slice(4 * rank, 4 * rank + 4)
        parts = [scores[rows], value[rows], score[rows], mask[rows]]
        full = {id(p): w for p, w in zip(parts, [scores, value, score, mask])}
        got = over_global_batch(Rank(rank), lambda s, v, c, m: leave_one_out_advantages(s, v, c, m, 0.3, 4), *parts)
        torch.testing.assert_close(got, whole_rloo[rows])
        got = over_global_batch(Rank(rank), lambda s, m: group_relative_advantages(s, m, 4, True), parts[0], parts[3])
        torch.testing.assert_close(got, whole_grpo[rows])
