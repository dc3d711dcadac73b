"""Encoder throughput: inference sentences/s and training steps/s of each training mode,
against the machine's measured matmul rate, so the distance to the hardware limit shows.

    python benchmarks/encoder_throughput.py                       # full run (minutes)
    python benchmarks/encoder_throughput.py --models minilm --steps 2 --infer-texts 64  # quick

A training step is what GLEAN does per batch: two augmented views of ``--batch`` texts of
``--length`` tokens, a projection head, a contrastive loss, backward, AdamW. Achieved GFLOP/s
are estimates, 2 · (parameters run) · tokens for a forward and 3× that for a trained part;
attention's length² term is left out (small at 32 tokens). Prints a markdown block for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from gcdbench.training.backbone import TextBackbone
from gcdbench.training.modes import TrainingMode, make_mode

KMEANS_SEEDS = (0, 1, 2)
MODELS = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}
VOCABULARY = (
    "card transfer account money top up fee pending payment arrived declined cash atm pin "
    "exchange rate refund balance statement verify identity blocked lost stolen app phone "
    "why how when where can my the a is was not yet still please help need"
)


def synthetic_texts(n: int, words: int, seed: int = 0) -> list[str]:
    """Sentences long enough to fill ``--length`` tokens after truncation."""
    rng = np.random.default_rng(seed)
    vocabulary = VOCABULARY.split()
    return [" ".join(rng.choice(vocabulary, size=words)) for _ in range(n)]


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def matmul_gflops(size: int, dtype: torch.dtype, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    torch.matmul(a, b)  # warm-up
    # The best of the repeats: this is the ceiling, so interference must not lower it.
    best = min(timed(lambda: torch.matmul(a, b), 1, warmup=0) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def layer_params(backbone: TextBackbone, layers: Iterable[int]) -> int:
    stack = backbone.encoder_model.encoder.layer
    return sum(p.numel() for i in layers for p in stack[i].parameters())


def inference_rate(
    backbone: TextBackbone, texts: list[str], precision: str
) -> tuple[float, np.ndarray]:
    """(sentences/s, the features) of one timed pass after a warm-up."""
    mode_free = make_mode("full", backbone, texts[:1], precision=precision)
    features: list[np.ndarray] = []
    seconds = timed(lambda: features.append(mode_free.encode_texts(texts, batch_size=64)), 1)
    return len(texts) / seconds, features[-1]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def train_rate(mode: TrainingMode, batch: int, steps: int) -> float:
    """Steps per second of the two-view contrastive step."""
    head = torch.nn.Sequential(
        torch.nn.Linear(mode.backbone.hidden_size, mode.backbone.hidden_size),
        torch.nn.ReLU(),
        torch.nn.Linear(mode.backbone.hidden_size, 128),
    ).to(mode.backbone.device)
    optimizer = torch.optim.AdamW([*mode.trainable_parameters(), *head.parameters()], lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0)
    mode.train()

    def step() -> None:
        rows = order.choice(mode.pool_size, size=batch, replace=False)
        with mode.autocast():
            views = [
                torch.nn.functional.normalize(
                    head(mode.embed(rows, augment=True, generator=generator)).float(), dim=1
                )
                for _ in range(2)
            ]
        logits = views[0] @ views[1].T / 0.07
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return 1.0 / timed(step, repeats=steps)


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    precisions = args.precisions.split(",")
    modes = args.modes.split(",")
    lines = [
        "### Encoder throughput",
        "",
        f"`{' '.join(['python', *map(shlex.quote, sys.argv)])}`  ",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, batch {args.batch}, length {args.length}, "
        f"{args.steps} timed steps after 1 warm-up",
        "",
        "| matmul | GFLOP/s |",
        "|---|---|",
    ]
    peak = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak[precision] = matmul_gflops(args.matmul_size, dtype, args.matmul_repeats)
        lines.append(f"| {args.matmul_size}² {precision} | {peak[precision]:.0f} |")
    lines += [
        "",
        "| model | precision | what | rate | est. GFLOP/s | % of matmul | vs full |",
        "|---|---|---|---|---|---|---|",
    ]
    agreement = [
        "",
        "bf16 vs fp32 inference features (CLS), cosine per text:",
        "",
        "| model | mean | min | texts |",
        "|---|---|---|---|",
    ]
    pool = synthetic_texts(max(args.batch * 4, args.infer_texts), words=args.length)
    for key in args.models.split(","):
        backbone = TextBackbone.from_ref(MODELS[key], max_length=args.length, device="cpu")
        every_layer = range(backbone.num_layers)
        features = {}
        for precision in precisions:
            rate, features[precision] = inference_rate(
                backbone, pool[: args.infer_texts], precision
            )
            flops = 2 * layer_params(backbone, every_layer) * args.length * rate / 1e9
            lines.append(
                f"| {key} | {precision} | inference | {rate:.1f} sentences/s | {flops:.1f} | "
                f"{100 * flops / peak[precision]:.0f}% | |"
            )
            full_rate = None
            for name in modes:
                start = time.perf_counter()
                mode = make_mode(name, backbone, pool[: args.batch * 4], precision=precision)
                cache_s = time.perf_counter() - start
                steps_per_s = train_rate(mode, args.batch, args.steps)
                trained = layer_params(backbone, mode.trained_layers())
                tokens = 2 * args.batch * args.length  # two views
                flops = 2 * 3 * trained * tokens * steps_per_s / 1e9
                full_rate = steps_per_s if name == "full" else full_rate
                ratio = f"{steps_per_s / full_rate:.1f}×" if full_rate else ""
                lines.append(
                    f"| {key} | {precision} | train {name} (setup {cache_s:.1f} s) | "
                    f"{steps_per_s:.2f} steps/s | {flops:.1f} | "
                    f"{100 * flops / peak[precision]:.0f}% | {ratio} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
        if {"fp32", "bf16"} <= features.keys():
            cos = cosines(features["fp32"], features["bf16"])
            agreement.append(f"| {key} | {cos.mean():.5f} | {cos.min():.5f} | {len(cos)} |")
        del backbone
    return "\n".join(lines + (agreement if len(agreement) > 5 else []))


def clustering_check(model_keys: list[str], data: Path, texts_n: int) -> str:
    """K-means ACC of fp32 vs bf16 CLS features on the BANKING test split: does bf16 keep
    the clustering a GCD method would see?"""
    from sklearn.cluster import KMeans

    from gcdbench.metrics import cluster_acc

    rows = (data / "banking" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts, labels = zip(*(r.rsplit("\t", 1) for r in rows[:texts_n]), strict=True)
    names, label_ids = np.unique(labels, return_inverse=True)
    k = len(names)
    lines = [
        "",
        f"K-means (K={k}) ACC on the first {len(texts)} BANKING test texts, CLS features, "
        f"mean ± std over K-means seeds {', '.join(map(str, KMEANS_SEEDS))} (the seed spread "
        "shows how much of a gap is K-means noise):",
        "",
        "| model | fp32 ACC | bf16 ACC |",
        "|---|---|---|",
    ]
    for key in model_keys:
        backbone = TextBackbone.from_ref(MODELS[key], device="cpu")
        accs = []
        for precision in ("fp32", "bf16"):
            mode = make_mode("full", backbone, list(texts[:1]), precision=precision)
            feats = mode.encode_texts(list(texts))
            scores = []
            for seed in KMEANS_SEEDS:
                pred = KMeans(k, n_init=10, random_state=seed).fit_predict(feats)
                scores.append(100 * cluster_acc(label_ids, pred))
            accs.append(f"{np.mean(scores):.2f} ± {np.std(scores):.2f}")
        lines.append(f"| {key} | {accs[0]} | {accs[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm,mpnet", help="comma list: minilm, mpnet")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--modes", default="full,top-2,head", help="full first for the ratio")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--infer-texts", type=int, default=512)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--matmul-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cluster-texts",
        type=int,
        default=0,
        help="also compare fp32/bf16 K-means ACC on this many BANKING test texts "
        "(needs GCDBENCH_DATA); 0 skips it",
    )
    args = parser.parse_args(argv)
    report = run(args)
    data = os.environ.get("GCDBENCH_DATA")
    if args.cluster_texts and data:
        report += "\n" + clustering_check(args.models.split(","), Path(data), args.cluster_texts)
    print(report)


if __name__ == "__main__":
    main()
