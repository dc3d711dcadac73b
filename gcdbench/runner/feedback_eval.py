"""``gcdbench feedback eval``: ask a provider a dataset's feedback bank and keep the scores.

An evaluation's id hashes what shapes its answers — the bank (its id covers every question),
the provider's canonical spec (model, options, budget), the asking policy, how category
options are described, the kinds asked, and :data:`EVAL_VERSION` — so, as with runs, one id
means one result. Records go to ``<results>/feedback/<dataset>/<id[:16]>/record.json`` with
the per-question answers beside them (``answers.csv``), written whole or not at all.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gcdbench.api.feedback import Answer, AskingPolicy, FeedbackEnv
from gcdbench.api.progress import tally_questions
from gcdbench.api.spec import canonical_json
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.bank import KINDS, Bank
from gcdbench.feedback.bank_eval import DESCRIBERS, descriptions, score_kind
from gcdbench.feedback.fusion import score_fusion
from gcdbench.feedback.resolve import open_feedback
from gcdbench.runner import provenance
from gcdbench.runner.context import Reporter
from gcdbench.runner.store import publish_dir
from gcdbench.util.files import write_json

#: Bumped when scoring or asking in an evaluation changes its figures.
EVAL_VERSION = "1"
RECORD = "record.json"
ANSWERS = "answers.csv"


@dataclass(frozen=True)
class EvalRequest:
    llm: str  # canonical provider spec (gcdbench.feedback.resolve.resolve_llm)
    policy: AskingPolicy
    kinds: tuple[str, ...] = KINDS
    describer: str = "provider"
    fusion: bool = False  # also ask the calibration bank and fuse with the encoder

    def __post_init__(self) -> None:
        if self.describer not in DESCRIBERS:
            raise GcdbenchError(
                f"--describe {self.describer!r} is not one of {', '.join(DESCRIBERS)}."
            )
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise GcdbenchError(
                f"--kind {', '.join(unknown) or '(none)'}: a bank holds {', '.join(KINDS)}; "
                "name one or more of them."
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "llm": self.llm,
            "policy": dataclasses.asdict(self.policy),
            "kinds": list(self.kinds),
            "describer": self.describer,
        }
        if self.fusion:  # only when on, so evaluations without it keep their ids
            out["fusion"] = True
        return out


def eval_id(bank: Bank, request: EvalRequest, calibration: Bank | None = None) -> str:
    content = {"version": EVAL_VERSION, "bank": bank.bank_id, **request.to_dict()}
    if calibration is not None:
        content["calibration_bank"] = calibration.bank_id
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def eval_dir(results_dir: Path, bank: Bank, identity: str) -> Path:
    return results_dir / "feedback" / str(bank.source["dataset"]) / identity[:16]


def evaluate(
    bank: Bank,
    request: EvalRequest,
    env: FeedbackEnv,
    results_dir: Path,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
    calibration: Bank | None = None,
) -> tuple[Path, bool]:
    """Ask ``bank``'s questions as ``request`` says and write the record; returns its path
    and whether it was written now (False: an identical evaluation was already stored).
    With ``request.fusion`` the ``calibration`` bank's questions are asked too."""
    reporter = reporter or Reporter()
    if request.fusion and calibration is None:
        raise GcdbenchError("fusion needs the calibration bank; build it with the bank.")
    calibration = calibration if request.fusion else None
    identity = eval_id(bank, request, calibration)
    folder = eval_dir(results_dir, bank, identity)
    if (folder / RECORD).is_file() and not force:
        return folder / RECORD, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    provider = open_feedback(request.llm, env)
    walls: dict[str, float] = {}
    answers: dict[str, list[Answer]] = {}
    calibrated: dict[str, list[Answer]] = {}
    try:
        described: list[str] = []
        if "select-category" in request.kinds:
            with (
                reporter.stage(f"describe {len(bank.members)} clusters ({request.describer})"),
                tally_questions(reporter, "characterize-cluster", len(bank.members)),
            ):
                t = time.perf_counter()
                described = descriptions(bank, provider, request.describer)
                walls["characterize-cluster"] = time.perf_counter() - t
        for kind in request.kinds:
            queries = bank.queries(kind, request.policy, described)
            with reporter.stage(f"ask {kind}"), tally_questions(reporter, kind, len(queries)):
                t = time.perf_counter()
                answers[kind] = list(provider.answer(queries))
                walls[kind] = time.perf_counter() - t
            if calibration is not None:
                extra = calibration.queries(kind, request.policy, described)
                with (
                    reporter.stage(f"ask {kind} (calibration)"),
                    tally_questions(reporter, kind, len(extra)),
                ):
                    calibrated[kind] = list(provider.answer(extra))
        described_by = provider.describe()
    finally:
        provider.close()
    stats = described_by.get("stats", {}).get("per_kind", {})
    kinds: dict[str, Any] = {}
    for kind in request.kinds:
        kind_stats = stats.get(kind, {})
        scored = score_kind(bank.questions[kind], answers[kind], kind_stats.get("chosen_positions"))
        scored["cost"] = _cost(kind_stats, len(answers[kind]), walls[kind])
        if calibration is not None:
            scored["fusion"] = score_fusion(
                (calibration.questions[kind], calibrated[kind]),
                (bank.questions[kind], answers[kind]),
            )
        kinds[kind] = scored
    if "characterize-cluster" in walls:
        kinds["characterize-cluster"] = {
            "questions": len(bank.members),
            "cost": _cost(
                stats.get("characterize-cluster", {}),
                len(bank.members),
                walls["characterize-cluster"],
            ),
        }
    record = {
        "eval_id": identity,
        "eval_version": EVAL_VERSION,
        "bank": bank.summary(),
        "bank_source": dict(bank.source),
        "calibration_bank": calibration.summary() if calibration is not None else None,
        **request.to_dict(),
        "kinds": kinds,
        "provider": described_by,
        "descriptions": described,
        "provenance": {
            **provenance.collect(),
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.perf_counter() - clock, 3),
            "peak_rss_mb": provenance.peak_rss_mb(),
        },
    }
    _write(folder, record, _answer_rows(bank, answers))
    return folder / RECORD, True


def _cost(stats: dict[str, Any], questions: int, wall: float) -> dict[str, Any]:
    """Per question: wall seconds, backend seconds, tokens and dollars (None: unpriced)."""
    per = max(questions, 1)
    usd = stats.get("cost_usd")
    return {
        "wall_s_per_question": round(wall / per, 4),
        "backend_s_per_question": round(float(stats.get("latency_s", 0.0)) / per, 4),
        "requests_per_question": round(stats.get("requests", 0) / per, 3),
        "prompt_tokens_per_question": round(stats.get("prompt_tokens", 0) / per, 1),
        "completion_tokens_per_question": round(stats.get("completion_tokens", 0) / per, 2),
        "usd_per_question": None if usd is None else round(usd / per, 8),
        "ledger_hits": stats.get("ledger_hits", 0),
    }


def _answer_rows(bank: Bank, answers: dict[str, list[Answer]]) -> list[dict[str, Any]]:
    rows = []
    for kind, given in answers.items():
        for i, (q, a) in enumerate(zip(bank.questions[kind], given, strict=True)):
            scores = getattr(a, "scores", None)
            rows.append(
                {
                    "kind": kind,
                    "question": i,
                    "anchor": q.anchor,
                    "answer": "" if a.value is None else int(a.value),
                    "status": a.status,
                    "confidence": "" if a.confidence is None else round(float(a.confidence), 4),
                    "scores": "" if not scores else json.dumps([round(s, 4) for s in scores]),
                    "correct": json.dumps(list(q.correct)),
                    "encoder_choice": q.encoder_choice,
                }
            )
    return rows


def _write(folder: Path, record: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """The folder appears whole: written under a hidden name, then published in one step."""
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_json(tmp / RECORD, record)
        with open(tmp / ANSWERS, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["kind"])
            writer.writeheader()
            writer.writerows(rows)
        # --force swaps the new record in at once (gcdbench/runner/store.py); after a swap
        # ``tmp`` holds the old record.
        publish_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def eval_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    """Every stored evaluation record, by path order."""
    root = results_dir / "feedback"
    if not root.is_dir():
        return
    for path in sorted(root.glob(f"*/*/{RECORD}")):
        if path.parent.name.startswith("."):
            continue
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GcdbenchError(
                f"cannot read feedback record {path} ({type(exc).__name__}: {exc}); delete it "
                "or run the evaluation again with --force."
            ) from None


__all__ = ["EVAL_VERSION", "EvalRequest", "eval_dir", "eval_id", "eval_records", "evaluate"]
