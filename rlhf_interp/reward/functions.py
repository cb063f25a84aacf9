"""Reward functions ``list[str] -> Tensor[batch]``: the period (character-count) task, sentiment,
length, any ``module:function`` callable, and a learned reward model (``reward_model:PATH``).

Rewards are validated where they are called (`score`), so a broken user function fails with its own
name in the message instead of as a NaN three phases later.
"""

from __future__ import annotations

import importlib
import math
from functools import partial
from typing import Callable, Sequence

import torch

RewardFn = Callable[[list[str]], "torch.Tensor | Sequence[float]"]


def char_count(texts: list[str], char: str = ".") -> torch.Tensor:
    """ARENA's period task: how many times ``char`` occurs in each text."""
    return torch.tensor([float(t.count(char)) for t in texts])


def response_length(texts: list[str], unit: str = "words") -> torch.Tensor:
    """Length of each text in words (default) or characters."""
    if unit not in ("words", "chars"):
        raise ValueError(f"response_length unit must be 'words' or 'chars', got {unit!r}.")
    return torch.tensor([float(len(t.split()) if unit == "words" else len(t)) for t in texts])


_VADER = None


def sentiment(texts: list[str]) -> torch.Tensor:
    """VADER compound sentiment in [-1, 1] (offline, rule-based; positive is good)."""
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return torch.tensor([_VADER.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32)


BUILTIN_REWARDS: dict[str, Callable[..., torch.Tensor]] = {
    "char_count": char_count,
    "periods": char_count,
    "sentiment": sentiment,
    "length": response_length,
}


def reward_name(reward: RewardFn) -> str:
    """The name a reward is reported under (``reward_name`` attribute, else the function's name)."""
    return getattr(reward, "reward_name", getattr(reward, "__name__", repr(reward)))


# ``module:function`` rewards whose module moved; run directories written before the move still resume.
MOVED_REWARDS = {"rlhf_interp.probes.behaviour:pattern_count": "rlhf_interp.measure.behaviour:pattern_count"}


def get_reward(spec: str | RewardFn, **kwargs) -> RewardFn:
    """Resolve a reward: a callable, a builtin name (``char_count``, ``sentiment``, ``length``),
    ``module:function`` (a Python callable taking ``list[str]``), or ``reward_model:PATH``.

    ``kwargs`` are bound to the function (e.g. ``char="!"`` for ``char_count``). The result is a new
    callable carrying ``reward_name``; the function it wraps is never modified (builtins are shared,
    and bound methods take no attributes).
    """
    if callable(spec):
        fn: RewardFn = spec
        name = reward_name(spec)
    elif not isinstance(spec, str):
        raise ValueError(f"A reward is a callable or a name, not {type(spec).__name__}.")
    elif spec in BUILTIN_REWARDS:
        fn, name = BUILTIN_REWARDS[spec], spec
    elif spec.startswith("reward_model:"):
        from rlhf_interp.reward.model import load_reward_model  # learned RM, scored without grad

        return load_reward_model(spec.split(":", 1)[1], **kwargs).as_reward()
    elif ":" in spec:
        module_name, _, attr = MOVED_REWARDS.get(spec, spec).partition(":")  # old run dirs record old paths
        if not module_name or module_name.startswith(".") or not attr:
            raise ValueError(f"Reward {spec!r}: give 'module:function' with the module's full dotted name as "
                             f"imported from PYTHONPATH (e.g. mypackage.rewards:periods), not a relative name.")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"Cannot import reward {spec!r}: {err}. Give 'module:function' where the module "
                             f"is importable (on PYTHONPATH) and defines the function.") from err
        except SyntaxError as err:  # the user's module, not the toolkit: say where
            raise ValueError(f"Cannot import reward {spec!r}: {err.filename}, line {err.lineno}: {err.msg}. Fix the "
                             f"syntax of your module and run again.") from err
        except Exception as err:  # noqa: BLE001 - any error while the user's module runs at import
            raise ValueError(f"Cannot import reward {spec!r}: importing {module_name} raised {type(err).__name__}: "
                             f"{err} (in your module, not in rlhf_interp). Fix it and run again.") from err
        if not callable(fn):
            raise ValueError(f"Reward {spec!r} is a {type(fn).__name__}, not a function: give 'module:function' "
                             f"naming a callable that takes list[str] and returns one score per text.")
        name = spec
    else:
        raise ValueError(f"Unknown reward {spec!r}. Use one of {sorted(BUILTIN_REWARDS)}, 'module:function', "
                         f"or 'reward_model:PATH'.")
    bound = partial(fn, **kwargs)  # a fresh object: naming it leaves ``fn`` untouched
    bound.reward_name = name  # type: ignore[attr-defined]
    return bound


def score(reward: RewardFn, texts: list[str]) -> torch.Tensor:
    """Call ``reward`` and check what it returns: one finite float per text."""
    name = reward_name(reward)
    try:
        raw = reward(texts)
    except Exception as err:
        raise RuntimeError(f"Reward {name!r} raised {type(err).__name__}: {err}") from err
    try:
        values = torch.as_tensor(raw, dtype=torch.float32).flatten().cpu()
    except (TypeError, ValueError) as err:
        raise ValueError(f"Reward {name!r} must return a list or tensor of floats, got {type(raw).__name__}.") from err
    if values.numel() != len(texts):
        raise ValueError(f"Reward {name!r} returned {values.numel()} values for {len(texts)} texts; "
                         f"it must return exactly one float per text.")
    bad = [i for i, v in enumerate(values.tolist()) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"Reward {name!r} returned non-finite values (NaN or inf) for texts at indices "
                         f"{bad[:5]}, e.g. text {texts[bad[0]]!r}.")
    return values
