"""``--monitor SECONDS``: every rank prints the utilisation and memory of its own GPU.

Uses NVML through ``nvidia-ml-py`` (``import pynvml``; installed by ``pip install
'ddp[cuda]'``). Optional in every way: without the package, without a GPU or without the NVIDIA
driver (``nvmlInit()`` raises ``NVMLError_LibraryNotFound``) monitoring is skipped with one note.

NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``, CUDA does neither, so the
rank's CUDA device is matched to its NVML handle through the PCI bus id.

Example output (stderr of rank 1, every 30 s with ``--monitor 30``)::

    [rank 1] launcher: gpu cuda:1 (NVIDIA H100 80GB HBM3): util 97%, memory 61.2/79.6 GiB
"""
from __future__ import annotations

import sys
import threading


def normalize_bus_id(bus_id) -> tuple:
    """``'0000:3B:00.0'`` and ``'00000000:3b:00.0'`` (NVML's form) to the same tuple.

    Example:
        >>> normalize_bus_id("0000:3B:00.0") == normalize_bus_id(b"00000000:3b:00.0")
        True
    """
    if isinstance(bus_id, bytes):
        bus_id = bus_id.decode()
    domain, bus, rest = bus_id.strip().split(":")
    device, function = rest.split(".")
    return tuple(int(part, 16) for part in (domain, bus, device, function))


def nvml_handle(pynvml, bus_id):
    """The NVML handle of the GPU at PCI ``bus_id`` (None if NVML does not list it)."""
    wanted = normalize_bus_id(bus_id)
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        if normalize_bus_id(pynvml.nvmlDeviceGetPciInfo(handle).busId) == wanted:
            return handle
    return None


def sample(pynvml, handle, label) -> str:
    """One line: utilisation and memory of the GPU behind ``handle``."""
    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else name
    util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return (f"launcher: gpu {label} ({name}): util {util}%, memory "
            f"{mem.used / 2**30:.1f}/{mem.total / 2**30:.1f} GiB")


def start(interval: float, device_index, announce: bool = True):
    """Start a daemon thread printing a :func:`sample` line every ``interval`` seconds for CUDA
    device ``device_index`` (the rank's GPU; None when there is none). Returns the thread, or
    None when there is nothing to monitor (a note is printed when ``announce``)."""
    def note(why):
        if announce:
            sys.stderr.write(f"launcher: --monitor: {why}; GPU monitoring is off\n")
            sys.stderr.flush()
    if device_index is None:
        note("no GPU")
        return None
    try:
        import pynvml
    except ImportError:
        note("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
        return None
    try:
        pynvml.nvmlInit()
        import ddp
        bus_id = ddp.backend.cuda_module().cuda.runtime.deviceGetPCIBusId(device_index)
        handle = nvml_handle(pynvml, bus_id)
    except pynvml.NVMLError as exc:
        note(f"NVML is not usable ({exc})")
        return None
    if handle is None:
        note(f"NVML does not list the GPU at PCI {bus_id}")
        return None
    stop = threading.Event()

    def run():
        while not stop.wait(interval):
            try:
                line = sample(pynvml, handle, f"cuda:{device_index}")
            except pynvml.NVMLError as exc:
                line = f"launcher: gpu cuda:{device_index}: NVML error {exc}"
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    thread = threading.Thread(target=run, name="launcher-gpu-monitor", daemon=True)
    thread.stop = stop
    thread.start()
    return thread
