"""Per-run feedback statistics and the question / dollar budget.

Everything a run's record reports about its feedback: queries and backend requests per kind,
ledger hits, tokens, latency, dollars (``None`` when a model has no known price), every
non-ok status per kind, logprob-to-text fallbacks, and where the chosen options sat in the
prompt (position bias shows up as a skewed histogram).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gcdbench.errors import GcdbenchError


@dataclass(frozen=True)
class Budget:
    """``--llm-budget``: at most ``requests`` backend requests and/or ``usd`` dollars."""

    requests: int | None = None
    usd: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Budget | None:
        """``2000`` (requests), ``0.50usd`` / ``$0.50`` (dollars), or both: ``2000,0.5usd``."""
        if text is None or not str(text).strip():
            return None
        raw = str(text)
        requests: int | None = None
        usd: float | None = None
        for piece in raw.split(","):
            piece = piece.strip().lower()
            money = _MONEY.fullmatch(piece)
            if money and (piece.startswith("$") or money.group(2)):
                if usd is not None:
                    raise _budget_error(raw, "two dollar amounts")
                usd = float(money.group(1))
                if not math.isfinite(usd):  # past a float: 400 nines read as inf
                    raise _budget_error(raw, "a dollar amount too large to count")
            elif _COUNT.fullmatch(piece):
                if requests is not None:  # "1,2" is a typo, not a budget of 2
                    raise _budget_error(raw, "two request counts")
                requests = int(piece)
            else:
                raise _budget_error(raw)
        return cls(requests, usd)

    def canonical(self) -> str:
        parts = [str(self.requests)] if self.requests is not None else []
        parts += [f"{_dollars(self.usd)}usd"] if self.usd is not None else []
        return ",".join(parts)


# ASCII digits only: Python's \d and int() also read other scripts' digits ("١٢"). A count
# of at most 18 digits fits int() (which refuses over 4300) and any real budget.
_COUNT = re.compile(r"[0-9]{1,18}", re.ASCII)
_MONEY = re.compile(r"\$?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(usd|\$)?", re.ASCII)


def _budget_error(text: str, problem: str | None = None) -> GcdbenchError:
    # A value of thousands of digits is shown by its start, to keep the error one short line.
    shown = repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"
    got = f"{problem} in {shown}" if problem else shown
    return GcdbenchError(
        "--llm-budget takes a number of requests (2000, at most 18 digits), dollars (0.50usd "
        f"or $0.50) or one of each (2000,0.50usd); got {got}."
    )


def _dollars(usd: float) -> str:
    """``usd`` as the canonical spec writes it: ``:g`` as ever (so stored specs and run ids
    stay the same), but plain digits where ``:g`` would write an exponent, which ``parse``
    (reading the canonical spec back) does not take."""
    text = f"{usd:g}"
    return format(Decimal(repr(usd)), "f") if "e" in text else text


@dataclass
class KindStats:
    queries: int = 0
    requests: int = 0  # rendered prompts (k per query with order consistency)
    backend_requests: int = 0
    ledger_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    cost_unknown_requests: int = 0
    logprob_fallbacks: int = 0  # logprobs asked for but not returned: the text was parsed
    parse_retries: int = 0  # unconstrained replies that did not parse, asked once more
    statuses: Counter[str] = field(default_factory=Counter)
    # 1-based shown position of each order's choice; none with yes-no scoring (no positions)
    positions: Counter[int] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "requests": self.requests,
            "backend_requests": self.backend_requests,
            "ledger_hits": self.ledger_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": round(self.latency_s, 3),
            "cost_usd": None if self.cost_unknown_requests else round(self.cost_usd, 6),
            "cost_unknown_requests": self.cost_unknown_requests,
            "logprob_fallbacks": self.logprob_fallbacks,
            "parse_retries": self.parse_retries,
            "statuses": dict(sorted(self.statuses.items())),
            "chosen_positions": {str(k): v for k, v in sorted(self.positions.items())},
        }


@dataclass
class FeedbackStats:
    budget: Budget | None = None
    backend_batches: int = 0
    budget_exhausted: bool = False
    kinds: dict[str, KindStats] = field(default_factory=dict)

    def kind(self, name: str) -> KindStats:
        return self.kinds.setdefault(name, KindStats())

    @property
    def backend_requests(self) -> int:
        return sum(k.backend_requests for k in self.kinds.values())

    @property
    def cost_usd(self) -> float:
        return sum(k.cost_usd for k in self.kinds.values())

    def allows(self, extra_requests: int, cost_per_request: float | None) -> bool:
        """Whether ``extra_requests`` more backend requests stay inside the budget; the dollar
        limit uses the mean cost so far (or the caller's estimate)."""
        if self.budget is None:
            return True
        limit, usd = self.budget.requests, self.budget.usd
        if limit is not None and self.backend_requests + extra_requests > limit:
            return False
        # The dollar limit also stops once it is spent, whatever the estimate says.
        estimate = extra_requests * (cost_per_request or 0.0)
        return usd is None or (self.cost_usd < usd and self.cost_usd + estimate <= usd)

    def to_dict(self) -> dict[str, Any]:
        per_kind = {name: k.to_dict() for name, k in sorted(self.kinds.items())}
        unknown = any(k.cost_unknown_requests for k in self.kinds.values())
        total: dict[str, Any] = {
            key: sum(k[key] for k in per_kind.values())
            for key in (
                "queries",
                "requests",
                "backend_requests",
                "ledger_hits",
                "prompt_tokens",
                "completion_tokens",
                "logprob_fallbacks",
                "parse_retries",
            )
        }
        total["latency_s"] = round(sum(k.latency_s for k in self.kinds.values()), 3)
        total["cost_usd"] = None if unknown else round(self.cost_usd, 6)
        statuses: Counter[str] = Counter()
        for k in self.kinds.values():
            statuses.update(k.statuses)
        total["statuses"] = dict(sorted(statuses.items()))
        return {
            "total": total,
            "per_kind": per_kind,
            "backend_batches": self.backend_batches,
            "budget": self.budget.canonical() if self.budget else None,
            "budget_exhausted": self.budget_exhausted,
        }
