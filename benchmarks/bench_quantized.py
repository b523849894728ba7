"""Inference time of dynamically quantized Linear and LSTM against float, in ddp and (when
installed) PyTorch's fbgemm, in the same run. One BLAS thread, medians.

    python benchmarks/bench_quantized.py [--repeats 21]

ddp's int8 product runs on the float BLAS (exact for these sizes in float32), so the quantized
layer does the float layer's matrix product plus quantizing the input and widening the weight:
it is expected to be slower than float. PyTorch's fbgemm has real int8 kernels (VPMADDUBSW).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ddp  # noqa: E402


def cases(lib):
    """name -> (float module, input)."""
    rng = np.random.default_rng(0)
    nn = lib.nn

    def randn(*shape):
        return lib.tensor(rng.standard_normal(shape).astype(np.float32))

    return {
        "linear 1024->1024, batch 1": (nn.Linear(1024, 1024), randn(1, 1024)),
        "linear 1024->1024, batch 64": (nn.Linear(1024, 1024), randn(64, 1024)),
        "linear 784->1024, batch 128": (nn.Linear(784, 1024), randn(128, 784)),
        "lstm 128->256, 35 steps, batch 32": (nn.LSTM(128, 256), randn(35, 32, 128)),
    }


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(lib, repeats):
    out = {}
    quantize = lib.ao.quantization.quantize_dynamic
    for name, (module, x) in cases(lib).items():
        module.eval()
        q = quantize(lib.nn.Sequential(module), {type(module)}, dtype=lib.qint8)[0]
        with lib.no_grad():
            out[name] = (median_ms(lambda: module(x), repeats), median_ms(lambda: q(x), repeats))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    results = {"ddp": measure(ddp, args.repeats)}
    try:
        import torch
        torch.set_num_threads(1)
        torch.backends.quantized.engine = "fbgemm"
        warnings.filterwarnings("ignore")
        results["torch"] = measure(torch, args.repeats)
    except ImportError:
        pass
    head = "| layer | ddp float | ddp int8 | int8 / float |"
    if "torch" in results:
        head += " torch float | torch int8 | torch int8 / float | ddp int8 / torch int8 |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for name, (f, q) in results["ddp"].items():
        row = f"| {name} | {f:.3f} | {q:.3f} | {q / f:.2f}× |"
        if "torch" in results:
            tf, tq = results["torch"][name]
            row += f" {tf:.3f} | {tq:.3f} | {tq / tf:.2f}× | {q / tq:.2f}× |"
        print(row)


if __name__ == "__main__":
    main()
