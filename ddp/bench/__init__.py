"""``ddp-bench``: scaling, allreduce-bandwidth and bucket-size benchmarks of DDP, beside
PyTorch DDP when it is installed, and the cost model that carries them past one machine.

Modules: ``cli`` (the command), ``jobs`` (starting jobs through the launcher), ``worker`` (what
each rank measures), ``models`` (the benchmark networks, for ddp or torch), ``report``
(results.json, tables, plot, compare), ``costmodel`` (α-β model of ring and tree allreduce with
bucket overlap). See docs/performance.md and docs/scaling.md.
"""
