"""Claims are data: every number a report states is a `Claim` with its value, 95% interval and n.

A claim is a markdown sentence template whose numbers all come from fields, never from the literal text::

    iv = stats.mean_interval(per_prompt_reward, n={"prompts": 16, "samples_per_prompt": 1})
    Claim.estimate("reward_at_1nat", "best-of-n reaches {value} periods per 24 tokens {ci} at {budget} nat",
                   iv, params={"budget": 1})
    Claim.compare("bon_vs_steer", "best-of-n minus steering at {budget} nat: {value} {ci}; {verdict}",
                  stats.paired_difference(a, b), "best-of-n", "steering", params={"budget": 1})
    Claim.not_measured("freeze", "which number of frozen layers buys the most per nat: not yet measured with "
                       "enough samples (one seed per run)")

Placeholders: ``{value}``, ``{low}``, ``{high}`` (formatted with the claim's ``fmt`` unless the template gives
its own spec), ``{ci}`` (``[low, high]``), ``{n}`` (``16 prompts × 1 sample, 1 seed``), ``{verdict}``, and any
``params`` (settings the sentence names: a layer, a budget, a phase range). A literal digit outside a code span
(`` `k3` ``) is refused: a number the sentence states must be a field, so it is in ``report.json``.

``Report(..., claims=[...])`` (or ``report.claims.append(...)``) writes them into ``report.json``, generates the page's
headline from the claims marked ``headline`` and lists every claim in a table on the page; the reports index and
the top-level README's findings table (between ``<!-- findings:start -->`` and ``<!-- findings:end -->``,
`rlhf_interp.report.index.write_findings`) are generated from the headlines. `check_claims` and `unsupported_numbers` are what the tests
use to refuse a claim without n and interval, and a README or index number that no claim carries.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

KINDS = ("estimate", "comparison", "not_measured", "fact")
NOT_MEASURED = "not yet measured with enough samples"
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"
N_WORDS = {"prompts": ("prompt", "prompts"), "samples_per_prompt": ("sample", "samples"),
           "seeds": ("seed", "seeds"), "runs": ("run", "runs"), "samples": ("sample", "samples"),
           "tokens": ("token", "tokens"), "sequences": ("sequence", "sequences"), "phases": ("phase", "phases"),
           "settings": ("setting", "settings"), "layers": ("layer", "layers"), "pairs": ("pair", "pairs"),
           "positions": ("position", "positions"), "texts": ("text", "texts")}


class ClaimError(ValueError):
    """A claim that cannot be stated: no n, no interval, a number in its text that is no field."""


class _Num(float):
    """A float that formats with the claim's default spec when the template gives none."""

    def __new__(cls, value: float, spec: str):
        obj = super().__new__(cls, value)
        obj._spec = spec
        return obj

    def __format__(self, spec: str) -> str:
        return _fmt(float(self), spec or self._spec)


def _fmt(x: float, spec: str) -> str:
    text = format(x, spec)
    if re.fullmatch(r"-0(\.0*)?%?", text):  # no "-0.00"
        text = text[1:]
    return text


def format_n(n: dict[str, Any]) -> str:
    """``{"prompts": 16, "samples_per_prompt": 1, "seeds": 1}`` -> ``16 prompts × 1 sample, 1 seed``."""
    parts = []
    for key, val in n.items():
        one, many = N_WORDS.get(key, (key.replace("_", " "), key.replace("_", " ")))
        parts.append(f"{val} {one if val == 1 else many}")
    if "prompts" in n and "samples_per_prompt" in n:
        head = f"{parts[list(n).index('prompts')]} × {parts[list(n).index('samples_per_prompt')]}"
        rest = [p for k, p in zip(n, parts) if k not in ("prompts", "samples_per_prompt")]
        return ", ".join([head, *rest])
    return ", ".join(parts)


@dataclass
class Claim:
    """One statement of a report: the sentence template, its number with a 95% interval and n, and for a
    comparison the verdict. ``headline``: part of the page headline (and so of the index and README)."""

    id: str
    template: str
    kind: str = "estimate"
    value: float | None = None
    low: float | None = None
    high: float | None = None
    level: float = 0.95
    n: dict[str, Any] = field(default_factory=dict)
    verdict: str | None = None
    method: str = ""
    note: str = ""
    fmt: str = ".2f"
    params: dict[str, Any] = field(default_factory=dict)
    headline: bool = True

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def estimate(cls, id: str, template: str, interval, *, fmt: str = ".2f", params: dict | None = None,
                 headline: bool = True, n: dict | None = None, note: str = "") -> "Claim":
        """A value with its interval (a `rlhf_interp.core.stats.Interval`)."""
        return cls(id, template, "estimate", float(interval.value), float(interval.low), float(interval.high),
                   interval.level, dict(n or interval.n), None, interval.method, note or interval.note, fmt,
                   dict(params or {}), headline)

    @classmethod
    def compare(cls, id: str, template: str, diff, a: str, b: str, *, fmt: str = ".2f", params: dict | None = None,
                headline: bool = True, n: dict | None = None, note: str = "") -> "Claim":
        """A - B with its interval and the verdict (`rlhf_interp.core.stats.verdict`)."""
        from rlhf_interp.core.stats import verdict

        claim = cls.estimate(id, template, diff, fmt=fmt, params=params, headline=headline, n=n, note=note)
        claim.kind = "comparison"
        claim.verdict = verdict(diff, a, b, fmt=".2g").text
        return claim

    @classmethod
    def not_measured(cls, id: str, template: str, *, n: dict | None = None, params: dict | None = None,
                     headline: bool = True, note: str = "") -> "Claim":
        """A question the data cannot answer yet; the sentence says "not yet measured with enough samples"."""
        return cls(id, template, "not_measured", n=dict(n or {}), params=dict(params or {}), headline=headline,
                   note=note)

    @classmethod
    def fact(cls, id: str, template: str, *, params: dict, n: dict, headline: bool = True, note: str = ""
             ) -> "Claim":
        """A count or setting with no sampling error (how many pairs were labelled, which layers were frozen):
        its numbers are ``params``; ``n`` says what was counted."""
        return cls(id, template, "fact", n=dict(n), params=dict(params), headline=headline, note=note,
                   method="count")

    # -- text -----------------------------------------------------------------------------------

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in self.params.items():
            out[key] = _Num(val, self.fmt) if isinstance(val, float) else val
        if self.value is not None:
            out.update(value=_Num(self.value, self.fmt), low=_Num(self.low, self.fmt), high=_Num(self.high, self.fmt))
            out["ci"] = f"[{_fmt(self.low, self.fmt)}, {_fmt(self.high, self.fmt)}]"
        out["n"] = format_n(self.n)
        out["verdict"] = self.verdict or ""
        return out

    def sentence(self) -> str:
        try:
            return self.template.format(**self.fields())
        except (KeyError, IndexError, ValueError) as err:
            raise ClaimError(f"claim {self.id!r}: template {self.template!r} cannot be filled: {err!r}") from None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sentence"] = self.sentence()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Claim":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ----------------------------------------------------------------------------------------------
# checks


def _literal_text(template: str) -> str:
    """The template's literal text: fields and code spans removed."""
    literal = "".join(part[0] for part in string.Formatter().parse(template))
    return re.sub(r"`[^`]*`", "", literal)


def check_claim(claim: Claim) -> Claim:
    """Raise `ClaimError` unless the claim carries what a reader needs: an id, a kind, n, and (estimates and
    comparisons) a finite value inside a finite 95% interval; a comparison its verdict; a not-measured claim
    the words "not yet measured with enough samples"; and no literal number in its text."""
    where = f"claim {claim.id!r}"
    if not claim.id or not re.fullmatch(r"[a-z0-9_]+", claim.id):
        raise ClaimError(f"{where}: an id of lowercase letters, digits and '_'")
    if claim.kind not in KINDS:
        raise ClaimError(f"{where}: kind {claim.kind!r} is not one of {KINDS}")
    if claim.kind != "not_measured" and not claim.n:
        raise ClaimError(f"{where}: no n (prompts, samples per prompt, seeds ...): what does it rest on?")
    if claim.kind in ("estimate", "comparison"):
        nums = (claim.value, claim.low, claim.high)
        if any(x is None or not math.isfinite(x) for x in nums):
            raise ClaimError(f"{where}: no finite 95% interval (value {claim.value}, low {claim.low}, "
                             f"high {claim.high}); state it as not yet measured instead")
        if claim.low > claim.high:
            raise ClaimError(f"{where}: interval [{claim.low}, {claim.high}] is reversed")
        if "{ci}" not in claim.template and not ("{low" in claim.template and "{high" in claim.template):
            raise ClaimError(f"{where}: the sentence states no interval ({{ci}} or {{low}} and {{high}})")
    if claim.kind == "comparison" and not claim.verdict:
        raise ClaimError(f"{where}: a comparison without a verdict")
    if claim.kind == "not_measured":
        if claim.value is not None:
            raise ClaimError(f"{where}: not measured, yet it has a value")
        if NOT_MEASURED not in claim.sentence():
            raise ClaimError(f"{where}: a not-measured claim says {NOT_MEASURED!r}")
    digits = NUMBER.findall(_literal_text(claim.template))
    if digits:
        raise ClaimError(f"{where}: the text states {digits} literally: every number must be a field "
                         f"(value, interval, n or params)")
    claim.sentence()
    return claim


def check_claims(claims: Iterable[Claim | dict]) -> list[Claim]:
    """Every claim checked (dicts from report.json too); ids unique."""
    out = [check_claim(c if isinstance(c, Claim) else Claim.from_dict(c)) for c in claims]
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ClaimError(f"claim ids used twice: {dup}")
    return out


def headline(claims: Iterable[Claim]) -> str:
    """The page headline: the sentences of the headline claims, in order."""
    return " ".join(c.sentence().strip() for c in claims if c.headline)


def claims_table(claims: Iterable[Claim]):
    """One row per claim for the page: statement, value, 95% interval, n, verdict."""
    import pandas as pd

    rows = []
    for c in claims:
        rows.append({"claim": c.id, "kind": c.kind,
                     "value": "" if c.value is None else _fmt(c.value, c.fmt),
                     "95% interval": "" if c.low is None else f"[{_fmt(c.low, c.fmt)}, {_fmt(c.high, c.fmt)}]",
                     "n": format_n(c.n), "verdict": c.verdict or "", "interval method": c.method,
                     "note": c.note})
    return pd.DataFrame(rows, columns=["claim", "kind", "value", "95% interval", "n", "verdict", "interval method",
                                       "note"])


def claims_parts(claims: list[Claim]) -> tuple[str, str]:
    """(markdown, html) of the page's claims block: a note and the claims table (cells escaped in both)."""
    from rlhf_interp.report.html import markdown_to_html

    table = claims_table(claims)
    note = ("*What this page claims (`report.json` lists them as data): each value with its 95% interval and n; "
            "comparisons with their verdict.*")
    escaped = table.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)  # a cell's own "|"
    md = note + "\n\n" + escaped.to_markdown(index=False, disable_numparse=True)
    note_html = re.sub(r"^<p>(.*)</p>$", r"\1", markdown_to_html(note).strip(), flags=re.S)
    html = (f"<p class=\"caption\">{note_html}</p><div class=\"table-wrap\">"
            + table.to_html(index=False, border=0, classes="tbl claims", na_rep="") + "</div>")
    return md, html


def numbers(text: str) -> list[str]:
    """The numbers a text states (not those inside words such as ``k3`` or ``SmolLM2``), sign dropped."""
    return [m.lstrip("-") for m in NUMBER.findall(text)]


def supported_numbers(claims: Iterable[Claim | dict]) -> set[str]:
    """Every number the claims' sentences state, as written."""
    out: set[str] = set()
    for c in claims:
        c = c if isinstance(c, Claim) else Claim.from_dict(c)
        out.update(numbers(c.sentence()))
        out.update(numbers(format_n(c.n)))
    return out


def unsupported_numbers(text: str, claims: Iterable[Claim | dict]) -> list[str]:
    """Numbers in ``text`` (a README row, an index headline) that no claim states."""
    ok = supported_numbers(claims)
    return [x for x in numbers(re.sub(r"`[^`]*`", "", text)) if x not in ok]
