"""Round checkpoints: a training run killed mid-way continues from its last finished round
and ends with the predictions an uninterrupted run makes (docs/resume.md).

After every round of :func:`gcdbench.training.rounds.run_rounds` one file is published
(temp file + rename) in the run's checkpoint folder (``ctx.checkpoint_dir``, named by the run
id): the trainable weights, the optimiser and its schedule, every generator the loop draws
from (the rounds' NumPy stage generator, the loop's torch generator, torch's global
generators that dropout in the head and classifier use, the mode's fallback generator), the
labeled-batch cycle, the round log and last cluster state, the round hook's state (GLEAN's
and Loop's feedback log) and the feedback provider's accounting. Pre-training needs nothing
here: its result is published to the pre-training cache before the first round
(:mod:`gcdbench.training.pretrain`), so a restart finds it there.

The files are pickles read back by an unpickler that builds only plain values, NumPy arrays
and the dataclasses of ``gcdbench.api`` (and the feedback accounting): a checkpoint
folder someone else wrote cannot run code. A hook's state must be made of those.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import io
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from gcdbench.api.miner import ClusterState
from gcdbench.api.spec import canonical_json
from gcdbench.api.task import GCDTask
from gcdbench.engine import engine_fingerprint
from gcdbench.training.mode_base import TrainingMode
from gcdbench.training.optim import Optimisation
from gcdbench.util.files import atomic_open

if TYPE_CHECKING:  # the protocol the runner implements; the engine never imports the runner
    from gcdbench.api.context import RunContext

#: Bump when what a checkpoint holds or means changes: older files are then not resumed.
CHECKPOINT_FORMAT = 1
SUFFIX = ".ckpt"


@runtime_checkable
class ResumableHook(Protocol):
    """A round hook whose state across rounds can be saved. A hook without these methods
    turns checkpoints off (it may keep state nobody can restore); a stateless hook returns
    None from :meth:`checkpoint_state`."""

    def checkpoint_state(self) -> Any:
        """What the next rounds need from the rounds so far (plain values, NumPy arrays and
        ``gcdbench.api`` dataclasses only)."""
        ...

    def restore_checkpoint_state(self, state: Any) -> None: ...


class ResumableBatches:
    """:func:`gcdbench.training.optim.cycling_batches` as an object whose place in the cycle
    can be saved: batches of ``range(size)``, a fresh shuffle from ``rng`` drawn when a pass
    begins (the same draws, at the same moments); empty batches forever when ``size`` is 0."""

    def __init__(self, size: int, batch: int, rng: np.random.Generator) -> None:
        self.size, self.batch, self.rng = size, batch, rng
        self.order: np.ndarray | None = None
        self.start = 0

    def __iter__(self) -> ResumableBatches:
        return self

    def __next__(self) -> np.ndarray:
        if not self.size:
            return np.zeros(0, dtype=np.int64)
        if self.order is None or self.start >= self.size:
            self.order, self.start = self.rng.permutation(self.size), 0
        out = self.order[self.start : self.start + self.batch]
        self.start += self.batch
        return out

    def state(self) -> dict[str, Any]:
        return {"order": None if self.order is None else self.order.copy(), "start": self.start}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.order, self.start = state["order"], int(state["start"])


@dataclass
class RoundParts:
    """Everything the round loop changes while it trains."""

    mode: TrainingMode
    head: torch.nn.Module
    classifier: torch.nn.Module
    optimisation: Optimisation
    rng: np.random.Generator
    generator: torch.Generator
    labeled_batches: ResumableBatches
    loss_hooks: Mapping[str, Any]
    hook: Any


@dataclass
class RoundProgress:
    """How far the loop got: the finished rounds' log, the last cluster state, and the
    first epoch still to train."""

    rounds: list[dict[str, Any]]
    state: ClusterState | None
    next_epoch: int


@dataclass
class RoundCheckpoints:
    """The checkpoints of one round loop of one run: ``<folder>/<name>-<rounds done>.ckpt``.

    ``call`` fingerprints the loop's inputs (parameters, pool, hook type); a file made by
    another loop, or by another format, is never resumed."""

    folder: Path
    name: str
    ctx: RunContext
    call: str
    resumed: dict[str, Any] | None = None
    off: bool = False

    def save(self, parts: RoundParts, progress: RoundProgress) -> Path | None:
        """Publish the checkpoint after ``len(progress.rounds)`` rounds; drop older ones.
        State a restart could not read turns checkpoints off for the run (said once): the
        run itself goes on as it would without them."""
        if self.off:
            return None
        done = len(progress.rounds)
        try:
            # Pickled on its own and read back now, so a restart never meets it unreadable.
            state = pickle.dumps(_plain_state(parts, progress, self.ctx), protocol=5)
            _loads(state)
        except (pickle.PicklingError, pickle.UnpicklingError, TypeError, AttributeError) as exc:
            self.off = True
            self.ctx.reporter.message(f"round checkpoints off for this run: {exc}")
            return None
        payload = {
            "format": CHECKPOINT_FORMAT,
            "call": self.call,
            "rounds_done": done,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "tensors": _encode(_tensor_state(parts)),
            "state": state,
        }
        path = self.folder / f"{self.name}-{done:04d}{SUFFIX}"
        with atomic_open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=5)
        for older in self._files():
            if older != path:
                older.unlink(missing_ok=True)
        return path

    def restore(self, parts: RoundParts, rounds_total: int) -> RoundProgress | None:
        """Load the newest checkpoint into ``parts``; None (start over) when there is none
        this loop can use."""
        self._remove_partial_writes()
        files = sorted(self._files(), reverse=True)
        if not files:
            return None
        path = files[0]
        payload, unreadable = _read(path)
        if payload is None:
            return self._start_over(path, unreadable)
        if payload.get("call") != self.call:
            return self._start_over(path, "it belongs to another round loop")
        try:  # everything is read and checked before anything of the run is changed
            tensors = _decode(payload["tensors"])
            state = _loads(payload["state"])
            problem = _mismatch(parts, tensors)
        except (KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as exc:
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        if problem:
            return self._start_over(path, problem)
        _apply_tensors(parts, tensors)
        progress = _apply_plain(parts, state, self.ctx)
        done = len(progress.rounds)
        self.resumed = {
            "stage": self.name,
            "from_round": done,
            "rounds": rounds_total,
            "epochs_restored": progress.next_epoch,
            "checkpoint": str(path),
            "checkpoint_written_at": payload.get("written_at"),
        }
        self.ctx.reporter.message(
            f"resumed from round {done}/{rounds_total} ({path}); "
            f"{progress.next_epoch} trained epochs restored, not redone"
        )
        return progress

    def finish(self, epochs_trained: int) -> None:
        """Tell the run record where the loop resumed and what it trained since."""
        if self.resumed is not None:
            self.ctx.note_resumed({**self.resumed, "epochs_trained": epochs_trained})

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.glob(f"{self.name}-*{SUFFIX}") if p.is_file()]

    def _remove_partial_writes(self) -> None:
        # atomic_open's temp files: left only by a writer killed mid-write (the run's lock,
        # held by the caller, says no live process owns them).
        if self.folder.is_dir():
            for tmp in self.folder.glob(f".{self.name}-*.tmp"):
                tmp.unlink(missing_ok=True)

    def _start_over(self, path: Path, why: str) -> RoundProgress | None:
        """Say why the checkpoint is not used; the loop then starts from round 1."""
        self.ctx.reporter.message(f"not resuming from {path}: {why}; starting the rounds over")
        return None


def round_checkpoints(
    ctx: RunContext,
    hook: Any,
    inputs: Mapping[str, Any],
    *,
    name: str = "rounds",
) -> RoundCheckpoints | None:
    """The checkpoints of a round loop, or None when the run keeps none (no folder: a test
    context or a disabled run) or the hook keeps state it cannot hand over. ``inputs``:
    what identifies the loop besides the run (its parameters, the pool)."""
    folder = ctx.checkpoint_dir
    if folder is None:
        return None
    if hook is not None and not isinstance(hook, ResumableHook):
        ctx.reporter.message(
            f"no round checkpoints: the round hook {type(hook).__name__} has no "
            "checkpoint_state/restore_checkpoint_state (docs/resume.md)"
        )
        return None
    described = {
        **inputs,
        "name": name,
        "spec": ctx.spec.hash,
        # Same run id, other code (an edit that bumped no version): never resumed.
        "engine": engine_fingerprint(),
        "hook": None if hook is None else _code_digest(type(hook)),
    }
    call = hashlib.sha256(canonical_json(described).encode()).hexdigest()
    return RoundCheckpoints(Path(folder), name, ctx, call)


def rounds_inputs(
    task: GCDTask,
    params: Any,
    method: str,
    *,
    k: int,
    ce: bool,
    align_weight: float | None,
) -> dict[str, Any]:
    """What a round loop's result depends on besides the run's spec: for
    :func:`round_checkpoints`."""
    digest = hashlib.sha256()
    for text in task.train.texts:
        digest.update(text.encode())
        digest.update(b"\0")
    digest.update(np.ascontiguousarray(np.asarray(task.labeled_y, dtype=np.int64)).tobytes())
    return {
        "method": method,
        "params": dataclasses.asdict(params),
        "k": k,
        "num_classes": task.num_classes,
        "ce": ce,
        "align_weight": align_weight,
        "pool": digest.hexdigest(),
    }


def _code_digest(cls: type) -> str:
    """The hook's class and the sha256 of the file defining it."""
    try:
        source = inspect.getsourcefile(cls)
        text = Path(source).read_bytes() if source else b""
    except (OSError, TypeError):
        text = b""
    return f"{cls.__module__}.{cls.__qualname__}:{hashlib.sha256(text).hexdigest()}"


# ---- what is saved --------------------------------------------------------------------------


def _trainable_by_name(mode: TrainingMode) -> dict[str, torch.nn.Parameter]:
    """The mode's trainable backbone parameters by name: a cached and a fresh backbone list
    them alike, so names (not positions) match a checkpoint to this run's model."""
    names = {id(p): n for n, p in mode.backbone.named_parameters()}
    return {names[id(p)]: p for p in mode.trainable_parameters()}


def _tensor_state(parts: RoundParts) -> dict[str, Any]:
    device = parts.mode.backbone.device
    rng: dict[str, Any] = {
        "loop": parts.generator.get_state(),
        "global_cpu": torch.get_rng_state(),
    }
    # Dropout in the head and classifier draws from torch's global generator of the device.
    if device.type == "cuda":
        rng["global_cuda"] = torch.cuda.get_rng_state(device)
    # The mode's own generator, for calls that pass none. The loop always passes its own, so
    # this is saved for safety, not because a draw is known to happen.
    rng["mode_fallback"] = parts.mode.rng_state()
    return {
        "backbone": {n: p.detach() for n, p in _trainable_by_name(parts.mode).items()},
        "head": parts.head.state_dict(),
        "classifier": parts.classifier.state_dict(),
        "optimizer": parts.optimisation.optimizer.state_dict(),
        "losses": {
            name: hook.state_dict()
            for name, hook in parts.loss_hooks.items()
            if hasattr(hook, "state_dict")
        },
        "rng": rng,
    }


def _plain_state(parts: RoundParts, progress: RoundProgress, ctx: RunContext) -> dict[str, Any]:
    hook = parts.hook
    return {
        "rounds": progress.rounds,
        "cluster_state": progress.state,
        "next_epoch": progress.next_epoch,
        "numpy_rng": parts.rng.bit_generator.state,
        "labeled_batches": parts.labeled_batches.state(),
        "scheduler": parts.optimisation.scheduler.state_dict(),
        "steps_taken": parts.optimisation.steps_taken,
        "hook": hook.checkpoint_state() if isinstance(hook, ResumableHook) else None,
        "provider": _provider_accounting(ctx),
    }


def _provider_accounting(ctx: RunContext) -> dict[str, Any] | None:
    """What the feedback provider has counted (restored so the record's ``feedback``
    section, ``--llm-budget`` and the failure budget see every question of the run, not
    only those asked after the resume); None when the run has not built one."""
    return ctx.feedback.checkpoint_state() if ctx.feedback_loaded else None


# ---- what is restored -----------------------------------------------------------------------


def _mismatch(parts: RoundParts, tensors: Mapping[str, Any]) -> str:
    """Why ``tensors`` cannot go into this run's model ('' when they can)."""
    own = {n: tuple(p.shape) for n, p in _trainable_by_name(parts.mode).items()}
    saved = {n: tuple(t.shape) for n, t in tensors["backbone"].items()}
    if own != saved:
        return "its trainable weights differ from this run's model"
    for name, module in (("head", parts.head), ("classifier", parts.classifier)):
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        if shapes != {k: tuple(v.shape) for k, v in tensors[name].items()}:
            return f"its {name} differs from this run's"
    return ""


def _apply_tensors(parts: RoundParts, tensors: Mapping[str, Any]) -> None:
    with torch.no_grad():
        for name, param in _trainable_by_name(parts.mode).items():
            param.copy_(tensors["backbone"][name])
    parts.head.load_state_dict(tensors["head"])
    parts.classifier.load_state_dict(tensors["classifier"])
    parts.optimisation.optimizer.load_state_dict(tensors["optimizer"])
    for name, state in tensors["losses"].items():
        parts.loss_hooks[name].load_state_dict(state)
    rng = tensors["rng"]
    parts.generator.set_state(rng["loop"])
    torch.set_rng_state(rng["global_cpu"])
    if "global_cuda" in rng:
        torch.cuda.set_rng_state(rng["global_cuda"], parts.mode.backbone.device)
    if "mode_fallback" in rng:
        parts.mode.set_rng_state(rng["mode_fallback"])


def _apply_plain(parts: RoundParts, state: Mapping[str, Any], ctx: RunContext) -> RoundProgress:
    parts.rng.bit_generator.state = state["numpy_rng"]
    parts.labeled_batches.restore(state["labeled_batches"])
    parts.optimisation.scheduler.load_state_dict(state["scheduler"])
    parts.optimisation.steps_taken = int(state["steps_taken"])
    if isinstance(parts.hook, ResumableHook):
        parts.hook.restore_checkpoint_state(state["hook"])
    if state["provider"] is not None:
        ctx.feedback.restore_checkpoint_state(state["provider"])
    return RoundProgress(list(state["rounds"]), state["cluster_state"], int(state["next_epoch"]))


# ---- the file format ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    """A tensor as its exact bytes: dtype, shape and raw data (bf16 included)."""

    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray  # uint8


def _encode(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().to("cpu").contiguous().reshape(-1)
        raw = flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)
        dtype = str(obj.dtype).removeprefix("torch.")
        # Shares the live tensor's memory: pickled at once, before training moves on.
        return _Tensor(dtype, tuple(obj.shape), raw.numpy())
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_encode(v) for v in obj)
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        raw = torch.from_numpy(obj.data)
        dtype = getattr(torch, obj.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"{obj.dtype!r} is no torch dtype")
        flat = raw.to(torch.bool) if dtype == torch.bool else raw.view(dtype)
        return flat.reshape(obj.shape)
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_decode(v) for v in obj)
    return obj


def _read(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint's payload, or None and why it cannot be read."""
    try:
        with open(path, "rb") as handle:
            payload = _SafeUnpickler(handle).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        return None, f"it cannot be read ({exc})"
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        return None, "it was written by another checkpoint format"
    return payload, ""


def _loads(data: bytes) -> Any:
    return _SafeUnpickler(io.BytesIO(data)).load()


#: (module, name) globals a checkpoint may name besides the allowed dataclasses.
_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("collections", "Counter"),
    ("collections", "OrderedDict"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
}
#: Modules whose dataclasses a checkpoint may hold: the API's value types, the feedback
#: accounting, and this module's own tensor wrapper.
_DATACLASS_PACKAGE = "gcdbench.api."
_DATACLASS_MODULES = ("gcdbench.feedback.accounting", __name__)


class _SafeUnpickler(pickle.Unpickler):
    """Builds plain values, NumPy arrays and dataclasses of the allowed modules only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module.startswith(_DATACLASS_PACKAGE) or module in _DATACLASS_MODULES:
            found = getattr(importlib.import_module(module), name, None)
            if isinstance(found, type) and dataclasses.is_dataclass(found):
                return found
        raise pickle.UnpicklingError(
            f"a checkpoint may hold plain values, NumPy arrays and gcdbench.api dataclasses; "
            f"it names {module}.{name}"
        )


__all__ = [
    "CHECKPOINT_FORMAT",
    "ResumableBatches",
    "ResumableHook",
    "RoundCheckpoints",
    "RoundParts",
    "RoundProgress",
    "round_checkpoints",
    "rounds_inputs",
]
