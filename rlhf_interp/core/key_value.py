"""``KEY=VALUE`` options (``--set kl_coef=0.05``, ``--reward-arg char=.``): parsed in one place.

Values are YAML, so ``0.05`` is a float, ``true`` a bool, ``[1, 2]`` a list, ``{}`` an empty dict and
``.`` a string; an empty value is YAML's null (None).
"""

from __future__ import annotations

from typing import Any, Iterable


def parse_key_value(item: str, *, what: str = "option") -> tuple[str, Any]:
    """``"key=value"`` -> ``("key", yaml value)``; a ValueError names the item and the expected form."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{what} {item!r} must look like KEY=VALUE (e.g. kl_coef=0.05).")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ValueError(f"{what} {item!r}: the value is not valid YAML ({str(err).splitlines()[0]}); "
                         f"quote it, e.g. {key}='\"{raw}\"'.") from err


def parse_key_values(items: Iterable[str], *, what: str = "option") -> dict[str, Any]:
    """Several ``KEY=VALUE`` items -> a dict (a later item overrides an earlier one)."""
    return dict(parse_key_value(item, what=what) for item in items)
