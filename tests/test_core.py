"""The shared mechanics: masks and positions, atomic files and JSONL, seeds, KEY=VALUE options, content
digests, the activation-capture helper and layer freezing — each written once and used everywhere."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf_interp.bridge import capture, capture_texts, freeze_layers, load_model, plain_param_name, recording, tokenize
from rlhf_interp.core.hashing import tensor_digest, text_digest
from rlhf_interp.core.io import append_jsonl, atomic_dir, atomic_path, read_jsonl, trim_jsonl, write_jsonl
from rlhf_interp.core.key_value import parse_key_values
from rlhf_interp.core.masks import (bos_columns, content_mask, continuation_mask, gather_last, last_token_index,
                                    left_align, pad_rows, real_positions)
from rlhf_interp.core.seeding import mix_seed, seeded

PROMPTS = ["The old lighthouse keeper", "Hi", "Once upon a time in a quiet village,"]


def test_positions_and_masks_of_a_left_padded_batch(tiny):
    tokens, mask = tokenize(tiny, PROMPTS)
    lengths = mask.sum(1).tolist()
    width = tokens.shape[1]
    pos = real_positions(mask)
    for row, n in enumerate(lengths):
        assert pos[row].tolist() == [-1] * (width - n) + list(range(n))
        assert bos_columns(mask)[row] == width - n and tokens[row, width - n] == tiny.tokenizer.bos_token_id
    assert torch.equal(content_mask(mask), pos > 0)
    assert torch.equal(content_mask(mask, include_bos=True), mask.bool())
    assert (last_token_index(mask) == width - 1).all()
    right = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert last_token_index(right).tolist() == [1, 0]
    assert gather_last(torch.tensor([[1., 2., 3.], [4., 5., 6.]]), right).tolist() == [2., 4.]
    only_bos = torch.tensor([[0, 1], [1, 1]])
    assert content_mask(only_bos, keep_bos_if_alone=True).tolist() == [[False, True], [False, True]]


def test_pad_rows_and_left_align_round_trip():
    rows = [torch.arange(3.0), torch.arange(1.0), torch.arange(2.0)]
    left, mask = pad_rows(rows, side="left", value=-1)
    assert left.tolist() == [[0, 1, 2], [-1, -1, 0], [-1, 0, 1]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    right, rmask = pad_rows(rows, side="right")
    assert torch.equal(left_align(left, mask), right) and rmask.sum() == mask.sum()
    assert continuation_mask(torch.tensor([[5, 2, 7], [5, 6, 7]]), [2]).tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="side"):
        pad_rows(rows, side="middle")


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "vector.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["vector.bin"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_atomic_dir_swaps_whole_directories(tmp_path):
    final = tmp_path / "checkpoint-000001"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "b.txt").write_text("2")
            raise KeyboardInterrupt
    assert [p.name for p in final.iterdir()] == ["a.txt"] and list(tmp_path.iterdir()) == [final]
    with atomic_dir(final) as tmp:
        (tmp / "c.txt").write_text("3")
    assert [p.name for p in final.iterdir()] == ["c.txt"] and list(tmp_path.iterdir()) == [final]


def test_jsonl_append_trim_and_line_numbered_errors(tmp_path):
    path = tmp_path / "samples.jsonl"
    for phase in range(1, 6):
        append_jsonl(path, {"phase": phase, "text": "é."})
    assert trim_jsonl(path, lambda r: r["phase"] <= 3) == 2  # resume from phase 3: later lines go
    assert [r["phase"] for _, r in read_jsonl(path)] == [1, 2, 3]
    assert trim_jsonl(tmp_path / "missing.jsonl", lambda r: True) == 0
    write_jsonl(path, [{"a": 1}])
    path.write_text(path.read_text() + "\n{not json}\n")
    with pytest.raises(ValueError, match=r"samples.jsonl:3: not valid JSON"):
        list(read_jsonl(path))
    assert json.loads(path.read_text().splitlines()[0]) == {"a": 1}


def test_seeds_mix_deterministically_and_leave_the_callers_rng_alone():
    assert mix_seed(3, 7) == 3 * 1_000_003 + 7 and mix_seed(3, 7) != mix_seed(7, 3)
    assert len({mix_seed(s, p) for s in range(20) for p in range(50)}) == 1000
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with seeded(123):
        a = torch.rand(2)
    with seeded(123):
        b = torch.rand(2)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), expected)


# Modules still deriving a seed by hand, each with what moving it to mix_seed changes; open work, so the list may
# only shrink (the check fails when one is fixed and stays listed, or a new one appears).
SEEDS_BY_HAND = {
    "frontier/parts.py": "the direction prompts (load_prompts(seed=seed + 1)): the frontier report's held-out prompts",
    "measure/kl_study_runs.py": "eval samples seeded eval_seed + i: the kl_direction report's evaluation samples",
}


def _seed_arithmetic(source: str) -> list[int]:
    """Lines where a name holding a seed meets +, - or * (a seed derived by hand, not by `mix_seed`)."""
    import ast

    def seedy(node: ast.AST) -> bool:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return "seed" in name.lower()

    return sorted({node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.BinOp)
                   and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)) and (seedy(node.left) or seedy(node.right))})


def test_every_seed_of_the_package_is_derived_by_mix_seed():
    """One derivation (core/seeding.py): no module adds to or multiplies a seed itself (the trainer's minibatch
    orders were ``seed * 7919 + phase``, the policy samples ``seed + batch``). The check sees such code."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "rlhf_interp"
    found = {str(path.relative_to(root)): lines for path in sorted(root.rglob("*.py"))
             if path.name != "seeding.py" and (lines := _seed_arithmetic(path.read_text()))}
    assert set(found) == set(SEEDS_BY_HAND), f"seeds derived by hand (use core.seeding.mix_seed): {found}"
    assert _seed_arithmetic("g.manual_seed(cfg.seed * 7919 + phase)\nx = seed + 1\ny = mix_seed(seed, 1)\n") == [1, 2]


def test_key_values_are_yaml_and_errors_name_the_item():
    assert parse_key_values(["kl_coef=0.05", "adaptive_kl=false", "char=.", "reward_kwargs={}", "layers=[1, 2]",
                             "device="]) == {"kl_coef": 0.05, "adaptive_kl": False, "char": ".", "reward_kwargs": {},
                                             "layers": [1, 2], "device": None}
    with pytest.raises(ValueError, match="'kl_coef' must look like KEY=VALUE"):
        parse_key_values(["kl_coef"], what="--set")
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_key_values(["x=[1, 2"])


def test_digests_follow_content():
    a = torch.arange(4.0)
    assert tensor_digest(a) == tensor_digest(a.clone())
    assert tensor_digest(a) != tensor_digest(a + 1e-6) != tensor_digest(a.double())
    assert tensor_digest(a, None) != tensor_digest(a)
    assert text_digest(["ab", "c"]) != text_digest(["a", "bc"])


def test_capture_helper_matches_run_with_cache(tiny):
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    tokens, mask = tokenize(tiny, PROMPTS)
    with torch.no_grad():
        logits, cache = tiny.run_with_cache(tokens, attention_mask=mask, names_filter=names)
    got = capture(tiny, tokens, mask, names, logits=True)
    assert torch.equal(got.logits, logits) and all(torch.equal(got[n], cache[n]) for n in names)
    early = capture(tiny, tokens, mask, ["blocks.0.hook_resid_post"], stop_at_layer=1)
    assert early.logits is None and torch.equal(early["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])
    batches = list(capture_texts(tiny, PROMPTS, names[:1], batch_size=2))
    assert [list(b.rows) for b in batches] == [[0, 1], [2]]
    with recording(tiny, names[:1]) as seen, torch.no_grad():
        tiny(tokens, attention_mask=mask)
    assert torch.equal(seen[names[0]], cache[names[0]])
    assert not any(hp.fwd_hooks for hp in tiny.hook_points())  # every hook is gone again


def test_freeze_layers_one_rule_for_policy_and_reward_model():
    model = load_model("tiny-test", device="cpu")
    trainable = freeze_layers(model, 1)
    names = {plain_param_name(n) for n, p in model.original_model.named_parameters() if p.requires_grad}
    assert "model.norm.weight" in names and "model.layers.1.mlp.down_proj.weight" in names
    assert all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in names)
    assert {id(p) for p in trainable} == {id(p) for p in model.original_model.parameters() if p.requires_grad}
    assert not model.original_model.get_input_embeddings().weight.requires_grad
    freeze_layers(model, 2, train_embeddings=True, train_final_norm=False)
    assert model.original_model.get_input_embeddings().weight.requires_grad
    assert not any(p.requires_grad for n, p in model.original_model.named_parameters() if "norm" in n)
    with pytest.raises(ValueError, match="has 2 layers"):
        freeze_layers(model, 3)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_freed_large_tensors_are_reused_instead_of_faulted_in_again():
    """`reuse_freed_memory` (set by the PPO trainer): a 64 MiB tensor freed and allocated again comes back from
    the heap. By default glibc maps each such block afresh, and every one of its 4 KiB pages faults again."""
    import resource

    from rlhf_interp.core.allocator import reuse_freed_memory

    assert reuse_freed_memory()
    size = 64 << 20
    torch.empty(size, dtype=torch.uint8).fill_(1)  # the first one is faulted in
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(size, dtype=torch.uint8).fill_(1)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults <= 2 * size // 4096, faults  # without reuse: 5 x 16384 (measured 81925); with it, at most one
    # more block is ever faulted in (measured 16384)
