"""ddp on a GPU (CuPy) against PyTorch CUDA on the same GPU, in the same run: the MLP and
small-CNN training steps, Adam over 20M parameters, cross-entropy 8192x32000, LayerNorm and GELU
(forward + backward). Medians over repeats after warm-ups, each timing closed by a device
synchronisation; TF32 off in PyTorch so both compute in float32.

    python benchmarks/bench_gpu.py [--repeats 20] [--small]

Issue 10's goal: <= 1.1x PyTorch's time for the MLP step and the optimizer; the rest ranked for
fused kernels. Needs a GPU (CuPy); PyTorch CUDA is optional (ddp's times alone without it).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import ddp
from ddp.bench.models import mlp, small_cnn


def _torch():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _sync(lib):
    (lib.cuda.synchronize)()


def median_ms(lib, fn, repeats, warmups=3):
    for _ in range(warmups):
        fn()
    _sync(lib)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(lib)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _tensor(lib, array, grad=False):
    return lib.tensor(array, device="cuda", requires_grad=grad)


def train_step(lib, model_fn, x_shape, batch):
    lib.manual_seed(0)
    model = model_fn(lib).to("cuda")
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = _tensor(lib, rng.standard_normal((batch,) + x_shape).astype(np.float32))
    y = _tensor(lib, rng.integers(0, 10, batch))

    def step():
        opt.zero_grad()
        lib.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def adam_step(lib, n_params):
    rng = np.random.default_rng(0)
    sizes = [n_params // 24] * 24
    params = [lib.nn.Parameter(_tensor(lib, rng.standard_normal(n).astype(np.float32)))
              for n in sizes]
    for p in params:
        p.grad = _tensor(lib, rng.standard_normal(p.shape).astype(np.float32))
    return lib.optim.Adam(params, lr=1e-3).step


def loss_fwd_bwd(lib, n, classes):
    rng = np.random.default_rng(0)
    x = _tensor(lib, rng.standard_normal((n, classes)).astype(np.float32), grad=True)
    y = _tensor(lib, rng.integers(0, classes, n))
    return lambda: lib.nn.functional.cross_entropy(x, y).backward()


def layer_fwd_bwd(lib, make, shape):
    layer = make(lib).to("cuda")
    x = _tensor(lib, np.random.default_rng(0).standard_normal(shape).astype(np.float32), True)
    return lambda: layer(x).sum().backward()


def cases(small):
    k = 4 if small else 1
    return [
        ("MLP 784-1024-1024-10 step, batch 512",
         lambda lib: train_step(lib, mlp, (784,), 512 // k)),
        ("small CNN step, batch 256", lambda lib: train_step(lib, small_cnn, (1, 28, 28),
                                                             256 // k)),
        ("Adam step, 20M parameters", lambda lib: adam_step(lib, 20_000_000 // k)),
        ("cross_entropy 8192x32000 fwd+bwd", lambda lib: loss_fwd_bwd(lib, 8192 // k, 32000)),
        ("LayerNorm(1024) on 8192x1024 fwd+bwd",
         lambda lib: layer_fwd_bwd(lib, lambda m: m.nn.LayerNorm(1024), (8192 // k, 1024))),
        ("GELU on 8192x4096 fwd+bwd",
         lambda lib: layer_fwd_bwd(lib, lambda m: m.nn.GELU(), (8192 // k, 4096))),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="quarter sizes (a quick look)")
    args = parser.parse_args(argv)
    if not ddp.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a GPU: ddp.cuda.is_available() is False")
    torch = _torch()
    print(f"{'case':42s} {'ddp ms':>9s} {'torch ms':>9s} {'ratio':>7s}")
    for name, make in cases(args.small):
        ours = median_ms(ddp, make(ddp), args.repeats)
        if torch is None:
            print(f"{name:42s} {ours:9.3f} {'-':>9s} {'-':>7s}")
            continue
        ref = median_ms(torch, make(torch), args.repeats)
        print(f"{name:42s} {ours:9.3f} {ref:9.3f} {ours / ref:6.2f}x")


if __name__ == "__main__":
    main()
