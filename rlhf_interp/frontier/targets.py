"""Which tokens a reward favours: the target class a rank-one edit raises.

Lives in `frontier/` rather than beside the edit because it scores text with a reward, and `edits/`
knows no rewards (one-way layering).
"""

from __future__ import annotations

from typing import Any, Callable


def target_tokens_for_reward(tokenizer, reward: Callable[[list[str]], Any], *, max_tokens: int = 512) -> list[int]:
    """Token ids whose own text the reward scores above the empty string: the reward's "target class"
    (for the period reward, every token containing ``"."``). Special tokens are left out. At most
    ``max_tokens``, highest first."""
    from rlhf_interp.reward import score

    special = set(tokenizer.all_special_ids) | {i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items()
                                                if getattr(tok, "special", False)}
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    texts = [tokenizer.decode([i]) for i in vocab]
    scores = score(reward, texts)
    empty = float(score(reward, [""])[0])
    above = [(float(s), i) for s, i in zip(scores.tolist(), vocab) if s > empty]
    if not above:
        raise ValueError("No single token scores above the empty string under this reward, so the rank-one edit has "
                         "no target token class; pass target_tokens= (token ids) or direction= (a residual vector).")
    above.sort(key=lambda x: (-x[0], x[1]))
    return [i for _, i in above[:max_tokens]]
