"""A scalar head fed by a hook on the final residual stream: the PPO value head and the reward model's
score head are the same thing, so both use this one.

Why a hook instead of a wrapper model: the backbone stays a plain `TransformerBridge` (all its hooks and
analysis tools keep working), and the head reads exactly the activation an interpretability user would
name (``ln_final.hook_normalized`` by default). One forward pass gives logits and values.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import Tensor, nn

DEFAULT_HEAD_HOOK = "ln_final.hook_normalized"
HEAD_KINDS: tuple[str, ...] = ("mlp", "linear")


class ValueHead(nn.Module):
    """d_model -> 4 d_model -> 1 MLP (default) or a linear map, one scalar per position."""

    def __init__(self, d_model: int, kind: str = "mlp"):
        super().__init__()
        if kind == "mlp":
            self.net: nn.Module = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Linear(4 * d_model, 1))
        elif kind == "linear":
            self.net = nn.Linear(d_model, 1)
        else:
            raise ValueError(f"Unknown value head kind {kind!r}; use 'mlp' or 'linear'.")
        self.kind = kind
        last = self.net[-1] if isinstance(self.net, nn.Sequential) else self.net
        nn.init.zeros_(last.weight)  # start at V = 0: no initial bias in the advantages
        nn.init.zeros_(last.bias)

    def forward(self, resid: Tensor) -> Tensor:
        return self.net(resid).squeeze(-1)


def check_hook_name(bridge, hook_name: str) -> None:
    """Raise ValueError (listing the final-residual hooks) when ``hook_name`` is not a hook of ``bridge``."""
    if hook_name not in bridge.hook_dict:
        last = f"{bridge.cfg.n_layers - 1}.hook_resid_post"
        finals = [n for n in bridge.hook_dict if n.startswith("ln_final") or n.endswith(last)]
        raise ValueError(f"Unknown hook {hook_name!r} for the value head. Hooks on the final residual stream: "
                         f"{sorted(finals)}.")


@contextmanager
def values_from_hook(bridge, head: ValueHead, hook_name: str = DEFAULT_HEAD_HOOK) -> Iterator[dict[str, Tensor]]:
    """Inside the context every forward pass of ``bridge`` also fills ``out["values"]`` [batch, pos]."""
    check_hook_name(bridge, hook_name)
    out: dict[str, Tensor] = {}

    def hook(resid: Tensor, hook) -> Tensor:
        out["values"] = head(resid.to(next(head.parameters()).dtype))
        return resid

    with bridge.hooks(fwd_hooks=[(hook_name, hook)]):
        yield out


def forward_with_values(bridge, head: ValueHead, tokens: Tensor, attention_mask: Tensor,
                        hook_name: str = DEFAULT_HEAD_HOOK, **forward_kwargs) -> tuple[Tensor, Tensor]:
    """Logits [batch, pos, vocab] and values [batch, pos] from one forward pass. ``forward_kwargs`` go to the
    bridge (e.g. ``logits_to_keep``: unembed only the positions a caller reads; values cover every position)."""
    with values_from_hook(bridge, head, hook_name) as out:
        logits = bridge(tokens, attention_mask=attention_mask, **forward_kwargs)
    return logits, out["values"]
