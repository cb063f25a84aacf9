"""A value head fed by a hook on the final residual stream, so one forward pass gives logits and values.

Why a hook instead of a wrapper model: the policy stays a plain `TransformerBridge` (all its hooks and
analysis tools keep working), and the head reads exactly the activation an interpretability user
would name (``ln_final.hook_normalized`` by default).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import Tensor, nn


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
    if hook_name not in bridge.hook_dict:
        finals = [n for n in bridge.hook_dict if n.startswith("ln_final") or n.endswith(f"{bridge.cfg.n_layers - 1}.hook_resid_post")]
        raise ValueError(f"Unknown hook {hook_name!r} for the value head. Hooks on the final residual stream: {sorted(finals)}.")


@contextmanager
def values_from_hook(bridge, head: ValueHead, hook_name: str = "ln_final.hook_normalized") -> Iterator[dict[str, Tensor]]:
    """Inside the context every forward pass of ``bridge`` also fills ``out["values"]`` [batch, pos]."""
    check_hook_name(bridge, hook_name)
    out: dict[str, Tensor] = {}

    def hook(resid: Tensor, hook) -> Tensor:
        out["values"] = head(resid.to(next(head.parameters()).dtype))
        return resid

    with bridge.hooks(fwd_hooks=[(hook_name, hook)]):
        yield out


def forward_with_values(bridge, head: ValueHead, tokens: Tensor, attention_mask: Tensor,
                        hook_name: str = "ln_final.hook_normalized") -> tuple[Tensor, Tensor]:
    """Logits [batch, pos, vocab] and values [batch, pos] from one forward pass."""
    with values_from_hook(bridge, head, hook_name) as out:
        logits = bridge(tokens, attention_mask=attention_mask)
    return logits, out["values"]
