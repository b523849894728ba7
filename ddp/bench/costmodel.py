"""Past one machine, on paper: the α-β cost model of data-parallel training.

A message of ``n`` bytes between two ranks takes ``α + n/β`` (α: latency in seconds, β:
bandwidth in bytes/s). An allreduce of ``n`` bytes over ``p`` ranks then takes

- **ring** (reduce-scatter then allgather; 2(p−1) steps, each sending n/p bytes):
  ``T_ring = 2(p−1)·α + 2(p−1)/p · n/β`` — bandwidth-optimal, latency linear in p;
- **tree** (binomial-tree reduce to one rank, then broadcast; 2⌈log₂p⌉ steps of n bytes):
  ``T_tree = 2⌈log₂p⌉·(α + n/β)`` — latency logarithmic in p, bandwidth term log p times
  the ring's;
- **best**: the cheaper of the two for each message (what MPI libraries and NCCL choose by size).

One step of DDP = forward + backward + optimizer, where backward also launches the gradient
buckets' allreduces (one at a time, in bucket order, as every DDP does). Bucket ``i`` is ready
when backward has produced all its gradients; the model takes gradients to appear at a constant
rate in bytes over the backward pass (bucket i ready at ``t_bwd × bytes up to i / all bytes``).
Then ``start_i = max(ready_i, end_{i−1})``, ``end_i = start_i + T(bucket_i)``, and the
**exposed communication** (what the step waits for after backward) is
``max(0, end_last − t_bwd)`` with overlap, or ``Σ T(bucket_i)`` without (no core free to
communicate, or ``DDP_SYNC_COMM=1``). Weak-scaling efficiency (per-rank batch fixed, one
core or GPU per rank) is ``compute / (compute + exposed)``.

α and β are fit to measured allreduce times (:func:`fit_alpha_beta`; ``ddp-bench bandwidth``);
compute times come from the 1-rank benchmark. docs/scaling.md sets the predictions for 8–1,024
ranks next to the published figures of Horovod and PyTorch DDP.

Example (2 MiB over 4 ranks, α = 10 µs, β = 1 GB/s: ring 6·10 µs + 1.5·2 MiB/β):
    >>> round(ring_allreduce_time(2 * 2**20, 4, 10e-6, 1e9) * 1e3, 4)
    3.2057
    >>> round(tree_allreduce_time(2 * 2**20, 4, 10e-6, 1e9) * 1e3, 4)
    8.4286
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..distributed.reducer import FIRST_BUCKET_BYTES

ALGORITHMS = ("ring", "tree", "best")
MIB = 2 ** 20


# ------------------------------------------------------------------------- collectives
def ring_allreduce_time(nbytes: float, p: int, alpha: float, beta: float) -> float:
    """Seconds for a ring allreduce of ``nbytes`` over ``p`` ranks:
    ``2(p−1)α + 2(p−1)/p · n/β`` (0 on one rank).

    Example:
        >>> ring_allreduce_time(1e6, 2, 1e-5, 1e9)    # 2·1·α + 2·1/2·1e6/1e9
        0.00102
    """
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / beta


def tree_allreduce_time(nbytes: float, p: int, alpha: float, beta: float) -> float:
    """Seconds for a binomial-tree reduce then broadcast: ``2⌈log₂p⌉(α + n/β)`` (0 on one
    rank).

    Example:
        >>> tree_allreduce_time(1e6, 8, 1e-5, 1e9)    # 2·3·(1e-5 + 1e-3)
        0.00606
    """
    if p <= 1:
        return 0.0
    return 2 * math.ceil(math.log2(p)) * (alpha + nbytes / beta)


def allreduce_time(nbytes, p, alpha, beta, algorithm="ring") -> float:
    """:func:`ring_allreduce_time`, :func:`tree_allreduce_time`, or the smaller (``best``)."""
    if algorithm == "ring":
        return ring_allreduce_time(nbytes, p, alpha, beta)
    if algorithm == "tree":
        return tree_allreduce_time(nbytes, p, alpha, beta)
    if algorithm == "best":
        return min(ring_allreduce_time(nbytes, p, alpha, beta),
                   tree_allreduce_time(nbytes, p, alpha, beta))
    raise ValueError(f"allreduce algorithm must be one of {', '.join(ALGORITHMS)}, "
                     f"got {algorithm!r}")


def bus_bandwidth(nbytes: float, seconds: float, p: int) -> float:
    """Bus bandwidth of an allreduce (the NCCL tests' figure): the algorithm bandwidth
    ``n / t`` times ``2(p−1)/p``, the bytes each rank's link carries per byte reduced, so it
    compares with the link's own bandwidth whatever ``p``. For a ring it equals β when α = 0.

    Example:
        >>> bus_bandwidth(1e6, ring_allreduce_time(1e6, 4, 0.0, 5e9), 4)
        5000000000.0
    """
    return nbytes / seconds * (2 * (p - 1) / p if p > 1 else 1.0)


def fit_alpha_beta(sizes, seconds, p: int) -> tuple[float, float]:
    """α (s) and β (bytes/s) of the ring model fit to allreduce times ``seconds`` of messages of
    ``sizes`` bytes on ``p`` ranks: a straight line ``t = a + b·n`` by least squares on the
    relative error (the sizes span decades), then ``α = a / 2(p−1)``, ``β = 2(p−1) / (p·b)``.
    A negative intercept (noise on fast small messages) is taken as α = 0.

    Example:
        >>> sizes = [2**k for k in range(10, 24)]
        >>> times = [ring_allreduce_time(n, 4, 5e-6, 2e9) for n in sizes]
        >>> [float(f"{v:.6g}") for v in fit_alpha_beta(sizes, times, 4)]
        [5e-06, 2000000000.0]
    """
    if p <= 1:
        raise ValueError("fit_alpha_beta: an allreduce on 1 rank moves nothing; measure p >= 2")
    n = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    w = 1.0 / t
    (a, b), *_ = np.linalg.lstsq(np.stack([w, n * w], 1), t * w, rcond=None)
    if a < 0:  # through the origin instead
        a, b = 0.0, float(np.sum(n * t * w * w) / np.sum(n * n * w * w))
    return float(a / (2 * (p - 1))), float(2 * (p - 1) / (p * b))


# ------------------------------------------------------------------------- buckets
def bucket_sizes(param_bytes, cap_bytes: float, first_bytes: float = FIRST_BUCKET_BYTES):
    """Bytes of each DDP bucket for parameters of ``param_bytes`` bytes, in the order backward
    produces them (reverse registration order): the reducer's rule, a first bucket of at most
    ``min(first_bytes, cap_bytes)`` then ``cap_bytes`` each; a bucket closes when the next
    parameter would overflow it (a parameter larger than the cap gets a bucket of its own).

    Example:
        >>> MB = 2**20
        >>> bucket_sizes([40, 4 * MB, 4 * MB, 30 * MB], cap_bytes=25 * MB) == [40, 8 * MB, 30 * MB]
        True
    """
    sizes, current, cap = [], 0, min(first_bytes, cap_bytes)
    for nbytes in param_bytes:
        if current and current + nbytes > cap:
            sizes.append(current)
            current, cap = 0, cap_bytes
        current += nbytes
    if current:
        sizes.append(current)
    return sizes


def flat_buckets(total_bytes: float, cap_bytes: float = 25 * MIB,
                 first_bytes: float = FIRST_BUCKET_BYTES):
    """Buckets of a gradient known only by its size (ResNet-50, BERT): the first bucket
    ``min(first_bytes, cap_bytes)``, then full buckets of ``cap_bytes``, then the rest.

    Example:
        >>> [round(b / 2**20, 2) for b in flat_buckets(60 * 2**20)]
        [1.0, 25.0, 25.0, 9.0]
    """
    first = min(first_bytes, cap_bytes, total_bytes)
    sizes, left = [first], total_bytes - first
    while left > 0:
        sizes.append(min(cap_bytes, left))
        left -= sizes[-1]
    return sizes


def exposed_communication(buckets, backward_s, p, alpha, beta, algorithm="ring",
                          overlap=True) -> float:
    """Seconds a step waits for gradient allreduces after its backward pass ends.

    With ``overlap`` bucket ``i`` (``buckets`` in launch order, bytes) is ready at
    ``backward_s × (bytes up to and including i) / (all bytes)``, allreduces run one at a time
    in bucket order, and what runs past the end of backward is exposed. Without, every
    allreduce is exposed (their sum).

    Example (two 1 MB buckets, 2 ranks, α = 0, β = 1 GB/s: each allreduce 1 ms; backward
    4 ms: the first runs 2–3 ms, the second 4–5 ms, 1 ms exposed):
        >>> round(exposed_communication([1e6, 1e6], 4e-3, 2, 0.0, 1e9) * 1e3, 6)
        1.0
        >>> round(exposed_communication([1e6, 1e6], 4e-3, 2, 0.0, 1e9, overlap=False) * 1e3, 6)
        2.0
    """
    times = [allreduce_time(b, p, alpha, beta, algorithm) for b in buckets]
    if not overlap:
        return float(sum(times))
    total, done, end = float(sum(buckets)), 0.0, 0.0
    for nbytes, t in zip(buckets, times):
        done += nbytes
        ready = backward_s * done / total if total else backward_s
        end = max(ready, end) + t
    return max(0.0, end - backward_s)


# ------------------------------------------------------------------------- predictions
@dataclass
class Workload:
    """What the model needs of one training step on one rank: the gradient buckets (bytes,
    in launch order) and the compute times of forward, backward and optimizer step (s)."""
    name: str
    buckets: list
    forward_s: float
    backward_s: float
    optimizer_s: float = 0.0
    note: str = ""

    @property
    def compute_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s

    @property
    def gradient_bytes(self) -> float:
        return float(sum(self.buckets))


@dataclass
class Link:
    """An interconnect: latency α (s) and bandwidth β (bytes/s)."""
    name: str
    alpha: float
    beta: float
    note: str = ""


@dataclass
class Prediction:
    ranks: int
    comm_s: float          # all allreduces of a step, back to back
    exposed_s: float       # with overlap
    exposed_serial_s: float  # without overlap
    step_s: float
    efficiency: float
    efficiency_serial: float
    extra: dict = field(default_factory=dict)


def predict(work: Workload, p: int, link: Link, algorithm: str = "ring") -> Prediction:
    """The model's step time and weak-scaling efficiency of ``work`` on ``p`` ranks over
    ``link``, with and without overlap.

    Example (4 buckets of 25 MB, 100 + 200 ms of compute, 512 ranks, α = 10 µs, β = 3.125 GB/s:
    each allreduce 10.22 + 15.97 = 26.19 ms; buckets ready at 50, 100, 150, 200 ms, so only the
    last one's 26.19 ms is exposed: 300 / 326.19; serial: 300 / (300 + 4 × 26.19)):
        >>> w = Workload("toy", [25e6] * 4, 0.1, 0.2)
        >>> r = predict(w, 512, Link("25GbE", 10e-6, 3.125e9))
        >>> round(r.exposed_s * 1e3, 2), round(r.efficiency, 3), round(r.efficiency_serial, 3)
        (26.19, 0.92, 0.741)
    """
    comm = sum(allreduce_time(b, p, link.alpha, link.beta, algorithm) for b in work.buckets)
    exposed = exposed_communication(work.buckets, work.backward_s, p, link.alpha, link.beta,
                                    algorithm)
    compute = work.compute_s
    return Prediction(p, comm, exposed, comm, compute + exposed, compute / (compute + exposed),
                      compute / (compute + comm))


def compute_for_efficiency(work: Workload, p: int, link: Link, target: float = 0.9,
                           algorithm: str = "ring") -> float:
    """The compute time per step (s, split between forward, backward and optimizer as in
    ``work``) at which ``work`` reaches weak-scaling efficiency ``target`` on ``p`` ranks: the
    least compute that hides the gradient sync well enough (bisection; efficiency rises with
    compute).

    Example:
        >>> w = Workload("toy", [25e6] * 4, 0.1, 0.2)
        >>> t = compute_for_efficiency(w, 512, Link("25GbE", 10e-6, 3.125e9))
        >>> round(predict(scaled(w, t), 512, Link("25GbE", 10e-6, 3.125e9)).efficiency, 3)
        0.9
    """
    lo, hi = 1e-6, 1e4
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if predict(scaled(work, mid), p, link, algorithm).efficiency < target:
            lo = mid
        else:
            hi = mid
    return hi


def scaled(work: Workload, compute_s: float) -> Workload:
    """``work`` with its compute times scaled to total ``compute_s``."""
    k = compute_s / work.compute_s
    return Workload(work.name, work.buckets, work.forward_s * k, work.backward_s * k,
                    work.optimizer_s * k, work.note)


# ------------------------------------------------------------------------- references
# Gradient sizes are exact (fp32 parameters); the compute times are assumptions, stated in
# docs/scaling.md with what they rest on, and compute_for_efficiency says how much compute a
# link needs independently of them.
RESNET50 = Workload("ResNet-50 (25.6 M parameters)", flat_buckets(25.6e6 * 4), 0.030, 0.060,
                    0.0, "assumed 90 ms of compute per step (batch 32 on a V100-class GPU, fp32)")
BERT_BASE = Workload("BERT-base (110 M parameters)", flat_buckets(110e6 * 4), 0.100, 0.200,
                     0.0, "assumed 300 ms per step (batch 32 × 128 tokens, V100-class, fp32)")

LINKS = {
    "25GbE": Link("25 Gbit/s Ethernet (RoCE)", 10e-6, 25e9 / 8,
                  "Horovod's 2018 cluster; α assumed 10 µs"),
    "100Gb": Link("100 Gbit/s InfiniBand", 5e-6, 100e9 / 8, "α assumed 5 µs"),
}

# The published figures, each with the model run in that setting. Gradient sizes are the
# models' fp32 parameters; links and compute times per step are assumptions (P100 at batch 64
# ≈ 0.45–0.5 s for these networks in fp32; V100 as for RESNET50/BERT_BASE above); Horovod's
# tensor fusion packs gradients into 64 MiB buffers.
PUBLISHED = [
    {"source": "Sergeev & Del Balso 2018 (Horovod, arXiv:1802.05799)", "ranks": 512,
     "efficiency": "≈ 90 %", "setup": "128 servers × 4 Pascal GPUs, 25 Gbit/s RoCE",
     "link": "25GbE",
     "workload": Workload("Inception V3 (23.8 M)", flat_buckets(23.8e6 * 4, 64 * MIB), 0.15,
                          0.30, 0.0, "assumed 450 ms per step")},
    {"source": "Sergeev & Del Balso 2018", "ranks": 512, "efficiency": "≈ 90 %",
     "setup": "same", "link": "25GbE",
     "workload": Workload("ResNet-101 (44.5 M)", flat_buckets(44.5e6 * 4, 64 * MIB), 0.5 / 3,
                          1.0 / 3, 0.0, "assumed 500 ms per step")},
    {"source": "Sergeev & Del Balso 2018", "ranks": 512, "efficiency": "≈ 68 %",
     "setup": "same", "link": "25GbE",
     "workload": Workload("VGG-16 (138 M)", flat_buckets(138e6 * 4, 64 * MIB), 0.5 / 3, 1.0 / 3,
                          0.0, "assumed 500 ms per step")},
    {"source": "Li et al., VLDB 2020 (PyTorch DDP, arXiv:2006.15704)", "ranks": 256,
     "efficiency": "near-linear", "setup": "32 servers × 8 V100, NCCL; link assumed 100 Gbit/s",
     "link": "100Gb", "workload": RESNET50},
    {"source": "Li et al., VLDB 2020", "ranks": 256, "efficiency": "near-linear",
     "setup": "same", "link": "100Gb", "workload": BERT_BASE},
]
