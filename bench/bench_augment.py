"""Augmentation throughput: reglab's word operations against nlpaug, random_mask against a Python loop.

Run: .venv/bin/python bench/bench_augment.py   (writes its section of BENCHMARKS.md)

* Word level: 2,000 sentences of 20 words, deletion and swap at the same rate p = 0.1 with
  ``nlpaug.augmenter.word.RandomWordAug(action=..., aug_p=0.1)`` (one thread). nlpaug picks
  ``round(p·n)`` words per sentence (at least 1, at most 10); reglab draws each word with
  probability p; both keep every sentence non-empty. Target: reglab >= 20x nlpaug.
* Token level: ``random_mask`` on a (512, 512) int64 batch of token ids with 3 special ids,
  against a per-token Python loop on a slice (rate per token). Target: >= 10 M tokens/s.
"""

from __future__ import annotations

import datetime
import os
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median_time, write_section  # noqa: E402

from reglab.augment import text as T  # noqa: E402

P = 0.1
N_SENTENCES = 2000
WORDS = 20


def sentences() -> list[str]:
    rng = random.Random(0)
    vocab = [f"token{i}" for i in range(1000)]
    return [" ".join(rng.choice(vocab) for _ in range(WORDS)) for _ in range(N_SENTENCES)]


def python_loop_mask(ids: list[list[int]], p: float, mask_id: int, special: set[int], rng: random.Random) -> list[list[int]]:
    return [[mask_id if (t not in special and rng.random() < p) else t for t in row] for row in ids]


def main(note: str = "") -> str:
    torch.set_num_threads(1)
    import nlpaug.augmenter.word as naw

    texts = sentences()
    rows = []
    for action, ours in (("delete", T.random_delete), ("swap", T.random_swap)):
        aug = naw.RandomWordAug(action=action, aug_p=P)
        g = torch.Generator().manual_seed(0)
        t_nlp = median_time(lambda: aug.augment(texts), repeats=5, warmup=1)
        t_ours = median_time(lambda: ours(texts, P, generator=g), repeats=15, warmup=2)
        rows.append((action, N_SENTENCES / t_nlp, N_SENTENCES / t_ours, t_nlp / t_ours))

    ids = torch.randint(1000, 30000, (512, 512))
    ids[:, 0], ids[:, -1] = 101, 102
    ids[:, -50:-1] = 0
    g = torch.Generator().manual_seed(0)
    t_mask = median_time(lambda: T.random_mask(ids, 0.15, 103, (0, 101, 102), g), repeats=15, warmup=3)
    small = ids[:128].tolist()
    rng = random.Random(0)
    t_loop = median_time(lambda: python_loop_mask(small, 0.15, 103, {0, 101, 102}, rng), repeats=7, warmup=1)
    mask_rate = ids.numel() / t_mask
    loop_rate = (128 * 512) / t_loop

    today = datetime.date.today().isoformat()
    lines = [
        f"Command: `.venv/bin/python bench/bench_augment.py` — {today}",
        f"Machine: {machine()}",
        *([note] if note else []),
        "",
        f"Word-level augmentation, {N_SENTENCES} sentences of {WORDS} words, p = {P} "
        "(baseline: `nlpaug.augmenter.word.RandomWordAug`, same sentences, same run). Target: >= 20x.",
        "",
        "| operation | nlpaug (sentences/s) | reglab (sentences/s) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for action, nlp, ours, ratio in rows:
        lines.append(f"| {action} | {nlp:,.0f} | {ours:,.0f} | {ratio:.1f}x |")
    lines += [
        "",
        "`random_mask` on a (512, 512) int64 batch, p = 0.15, 3 special ids "
        "(baseline: per-token Python loop, same rate). Target: >= 10 M tokens/s.",
        "",
        "| implementation | tokens/s | ratio |",
        "|---|---:|---:|",
        f"| Python loop | {loop_rate / 1e6:.2f} M | 1x |",
        f"| reglab `random_mask` | {mask_rate / 1e6:.1f} M | {mask_rate / loop_rate:.0f}x |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    note = (
        f"Taken under load (1-minute load average {load:.1f} on {os.cpu_count()} cores, other jobs running): "
        "absolute rates are low and noisy, the same-run ratios are the numbers to read."
        if load > 1.5
        else ""
    )
    body = main(note)
    print(body)
    if "--no-write" not in sys.argv:
        write_section("Stochastic regularizers and augmentation", body)
