"""From the jobs' measurements to ``results.json``, tables (text or Markdown), the plot and the
side-by-side comparison of two runs.

Every file ``ddp-bench`` writes holds ``rows`` (one per measured point), ``key`` (the fields
that name a point) and ``metrics`` (the fields worth comparing), so that ``ddp-bench compare``
works on any of them.

Scaling rows: per framework, model, mode (``weak``: the per-rank batch is fixed; ``strong``:
the global batch is fixed and split) and rank count ``p``:

- ``samples_per_s`` = ``global_batch / step time``;
- ``efficiency`` = ``samples_per_s(p) / (p × samples_per_s(1))`` (1 at one rank; for weak
  scaling the same as ``step(1) / step(p)``);
- ``step_ms``, ``exposed_comm_ms`` (backward with gradient sync minus backward inside
  ``no_sync()``), ``step_ms_plain`` (``p`` replicas training alone: what sharing the machine
  costs without any communication) and ``comm_efficiency`` = ``step_ms_plain / step_ms``;
- ``predicted``: the cost model's exposed communication, step time and efficiency for this
  point (with overlap, and ``_serial`` without), from this job's α, β and compute times.

Example:
    >>> print(table(["a", "b"], [[1, 2.5]], markdown=True))
    | a | b |
    | --- | --- |
    | 1 | 2.50 |
"""
from __future__ import annotations

import json
import os

from . import costmodel, models

SCALING_KEY = ["framework", "model", "mode", "ranks"]
SCALING_METRICS = ["samples_per_s", "efficiency", "step_ms", "exposed_comm_ms"]


# ------------------------------------------------------------------------------- building
def scaling_rows(jobs, model_names, ranks, batch, global_batch):
    """Rows of ``results.json`` from the jobs' outputs ``jobs[framework][p]``."""
    rows = []
    for framework, by_p in jobs.items():
        for name in model_names:
            for mode in ("weak", "strong"):
                base = None
                for p in ranks:
                    b = batch if mode == "weak" else global_batch // p
                    job = by_p[p]
                    configs = job["models"][name]["configs"]
                    cfg = configs[f"{'ddp' if p > 1 else 'plain'}/{b}"]
                    plain = configs[f"plain/{b}"]
                    sps = p * b / cfg["step_ms"] * 1e3
                    base = sps if p == 1 else base
                    row = {"framework": framework, "model": name, "mode": mode, "ranks": p,
                           "batch_per_rank": b, "global_batch": p * b, "step_ms": cfg["step_ms"],
                           "samples_per_s": sps, "efficiency": sps / (p * base),
                           "exposed_comm_ms": cfg.get("exposed_comm_ms", 0.0),
                           "step_ms_plain": plain["step_ms"],
                           "comm_efficiency": plain["step_ms"] / cfg["step_ms"],
                           "forward_ms": plain["forward_ms"], "backward_ms": plain["backward_ms"],
                           "optimizer_ms": plain["optimizer_ms"],
                           "cpu_per_wall": cfg["cpu_per_wall"], "predicted": None}
                    if p > 1:
                        row["predicted"] = prediction(plain, job["models"][name]["buckets"],
                                                      job["link"], p, b, base)
                    rows.append(row)
    return rows


def prediction(plain, buckets, link, p, batch, base_samples_per_s):
    """The cost model at a measured point: the compute of ``p`` plain replicas (their measured
    forward, backward, optimizer) plus the predicted exposed communication of ``buckets`` over
    the link fit in the same job."""
    work = costmodel.Workload("measured", buckets, plain["forward_ms"] / 1e3,
                              plain["backward_ms"] / 1e3, plain["optimizer_ms"] / 1e3)
    pred = costmodel.predict(work, p, costmodel.Link("fit", link["alpha_s"], link["beta_Bps"]))
    out = {"exposed_comm_ms": pred.exposed_s * 1e3, "exposed_comm_ms_serial": pred.comm_s * 1e3}
    for suffix, exposed in (("", pred.exposed_s), ("_serial", pred.comm_s)):
        step = plain["step_ms"] + exposed * 1e3
        out["step_ms" + suffix] = step
        out["efficiency" + suffix] = p * batch / step * 1e3 / (p * base_samples_per_s)
    return out


def links_of(jobs):
    return {fw: {str(p): {k: v for k, v in job["link"].items() if k != "sweep"}
                 for p, job in by_p.items() if "link" in job} for fw, by_p in jobs.items()}


def models_of(jobs, model_names):
    first = next(iter(jobs.values()))
    top = first[max(first)]
    return {name: {"title": models.TITLES[name],
                   "parameters": top["models"][name]["parameters"],
                   "gradient_bytes": int(sum(top["models"][name]["buckets"])),
                   "buckets": top["models"][name]["buckets"]} for name in model_names}


def median_of(runs):
    """Element-wise median of nested dicts of numbers (the runs of ``--repeat``)."""
    import statistics
    if isinstance(runs[0], dict):
        return {k: median_of([r[k] for r in runs]) for k in runs[0]}
    if isinstance(runs[0], (int, float)) and not isinstance(runs[0], bool):
        return statistics.median(runs)
    return runs[0]


# ------------------------------------------------------------------------------- files
def write_json(doc, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def read_doc(path):
    """A ``ddp-bench`` JSON file, or the one in directory ``path`` (results.json, else
    bandwidth.json, else sweep.json)."""
    if os.path.isdir(path):
        for name in ("results.json", "bandwidth.json", "sweep.json"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise SystemExit(f"ddp-bench: no results.json, bandwidth.json or sweep.json in {path}")
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------- tables
def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(headers, rows, markdown=False) -> str:
    """A table as Markdown or as aligned text (numbers to two decimals)."""
    cells = [[fmt(v) for v in row] for row in rows]
    if markdown:
        lines = [headers, ["---"] * len(headers)] + cells
        return "\n".join("| " + " | ".join(r) + " |" for r in lines)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def pct(x):
    return None if x is None else f"{100 * x:.0f} %"


def scaling_table(doc, markdown=False) -> str:
    headers = ["model", "framework", "mode", "ranks", "batch/rank", "step ms", "samples/s",
               "efficiency", "comm eff.", "exposed ms", "model: exposed ms", "model: efficiency"]
    rows = []
    for r in doc["rows"]:
        pr = r["predicted"]
        rows.append([doc["models"][r["model"]]["title"], r["framework"], r["mode"], r["ranks"],
                     r["batch_per_rank"], r["step_ms"], f"{r['samples_per_s']:,.0f}",
                     pct(r["efficiency"]), pct(r["comm_efficiency"]), r["exposed_comm_ms"],
                     _bounds(pr, "exposed_comm_ms", "{:.2f}"), _bounds(pr, "efficiency", pct)])
    out = [table(headers, rows, markdown)]
    links = []
    for fw, by_p in doc["links"].items():
        for p, link in by_p.items():
            links.append(f"{fw} ({link['wire']}) on {p} ranks: "
                         f"{_alpha_beta(link)}")
    if links:
        out.append("\nlinks fit in the same jobs (ring model): " + "; ".join(links))
    out.append("model: exposed communication with overlap – without; efficiency likewise "
               "(the measurement should fall between them)")
    return "\n".join(out)


def bandwidth_table(doc, markdown=False) -> str:
    out = []
    for p, res in doc["ranks"].items():
        headers = ["bytes", "raw mpi4py ms", "raw bus GB/s", "ddp Allreduce ms", "bus GB/s",
                   "vs raw", "ddp Iallreduce+wait ms", "vs raw"]
        rows = []
        for r in (x for x in doc["rows"] if str(x["ranks"]) == p):
            rows.append([_size(r["bytes"]), r["raw_ms"], r["raw_busbw_GBps"], r["ddp_ms"],
                         r["ddp_busbw_GBps"], pct(r["ddp_vs_raw"]), r["iallreduce_ms"],
                         pct(r["iallreduce_vs_raw"])])
        out.append(f"allreduce of float32, {p} ranks (bus bandwidth = bytes/time × 2(p−1)/p)")
        out.append(table(headers, rows, markdown))
        fit = res["fit"]
        out.append(f"ring fit to raw mpi4py: {_alpha_beta(fit['raw'])}; ddp Allreduce: "
                   f"{_alpha_beta(fit['ddp'])}\n")
        for name, m in res["models"].items():
            raw = m["seconds"]["raw mpi4py, one buffer"]
            sizes = ", ".join(_size(b) for b in m["buckets"])
            out.append(f"{models.TITLES[name]} gradient sync, {p} ranks: "
                       f"{m['bytes'] / 2**20:.2f} MiB in {len(m['buckets'])} buckets ({sizes})")
            out.append(table(["variant", "ms", "GB/s", "vs raw one buffer"],
                             [[k, s * 1e3, m["bytes"] / s / 1e9, pct(raw / s)]
                              for k, s in m["seconds"].items()], markdown) + "\n")
    return "\n".join(out)


def sweep_table(doc, markdown=False) -> str:
    headers = ["bucket_cap_mb", "buckets", "step ms", "efficiency", "exposed ms",
               "model: exposed ms"]
    rows = [[r["bucket_cap_mb"], r["buckets"], r["step_ms"], pct(r["efficiency"]),
             r["exposed_comm_ms"], _bounds(r["predicted"], "exposed_comm_ms", "{:.2f}")]
            for r in doc["rows"]]
    s = doc["settings"]
    return (f"bucket-size sweep, ddp, {models.TITLES[s['model']]}, {s['ranks']} ranks, batch "
            f"{s['batch']} per rank (cap 'sync': DDP_SYNC_COMM=1, no overlap)\n"
            + table(headers, rows, markdown))


def render(doc, markdown=False) -> str:
    return {"scaling": scaling_table, "bandwidth": bandwidth_table,
            "sweep": sweep_table}[doc["kind"]](doc, markdown)


def _bounds(predicted, field, form):
    """'with overlap – without' of a predicted figure."""
    if predicted is None:
        return None
    show = form.format if isinstance(form, str) else form
    return f"{show(predicted[field])} – {show(predicted[field + '_serial'])}"


def _alpha_beta(link):
    return f"α = {link['alpha_s'] * 1e6:.2f} µs, β = {link['beta_Bps'] / 1e9:.2f} GB/s"


def _size(nbytes):
    for unit, k in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= k:
            return f"{nbytes / k:g} {unit}" if nbytes % k == 0 else f"{nbytes / k:.2f} {unit}"
    return f"{nbytes} B"


# ------------------------------------------------------------------------------- compare
def compare(a, b, name_a="A", name_b="B", markdown=False) -> str:
    """Two runs of the same kind side by side: every point in both, each metric in A, in B,
    and B/A.

    Example:
        >>> a = {"kind": "k", "key": ["n"], "metrics": ["t"], "rows": [{"n": 1, "t": 2.0}]}
        >>> b = {"kind": "k", "key": ["n"], "metrics": ["t"], "rows": [{"n": 1, "t": 3.0}]}
        >>> print(compare(a, b))
        n   t A   t B  t B/A
        -  ----  ----  -----
        1  2.00  3.00   1.50
    """
    if a.get("kind") != b.get("kind"):
        raise SystemExit(f"ddp-bench compare: a {a.get('kind')} run and a {b.get('kind')} run "
                         f"cannot be compared")
    key, metrics = a["key"], [m for m in a["metrics"] if m in b["metrics"]]
    index = {tuple(r[k] for k in key): r for r in b["rows"]}
    headers = key + [f"{m} {n}" for m in metrics for n in (name_a, name_b, "B/A")]
    rows = []
    for r in a["rows"]:
        other = index.get(tuple(r[k] for k in key))
        if other is None:
            continue
        cells = [r[k] for k in key]
        for m in metrics:
            x, y = r.get(m), other.get(m)
            numbers = all(isinstance(v, (int, float)) for v in (x, y))
            ratio = y / x if numbers and x else None
            cells += [x, y, ratio]
        rows.append(cells)
    if not rows:
        return "no point measured in both runs"
    text = table(headers, rows, markdown)
    return text if name_a == "A" else text.replace(" B/A", f" {name_b}/{name_a}")


# ------------------------------------------------------------------------------- plot
def plot_scaling(doc, path) -> None:
    """``scaling.png``: per model, samples/s against ranks (with the ideal line) and efficiency
    against ranks (with the cost model's prediction dashed). Raises ImportError without
    matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(doc["models"])
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for j, name in enumerate(names):
        top, bottom = axes[0][j], axes[1][j]
        for fw in sorted({r["framework"] for r in doc["rows"]}):
            for mode, style in (("weak", "-o"), ("strong", "-s")):
                rows = [r for r in doc["rows"] if (r["model"], r["framework"], r["mode"]) ==
                        (name, fw, mode)]
                ranks = [r["ranks"] for r in rows]
                line, = top.plot(ranks, [r["samples_per_s"] for r in rows], style,
                                 label=f"{fw} {mode}")
                if mode == "weak":
                    top.plot(ranks, [rows[0]["samples_per_s"] * p for p in ranks], ":",
                             color=line.get_color(), alpha=0.5)
                bottom.plot(ranks, [100 * r["efficiency"] for r in rows], style,
                            color=line.get_color(), label=f"{fw} {mode}")
                pred = [(r["ranks"], 100 * (r["predicted"]["efficiency"] if r["predicted"]
                                            else r["efficiency"])) for r in rows]
                bottom.plot(*zip(*pred), "--x", color=line.get_color(), alpha=0.6)
        top.set_title(doc["models"][name]["title"])
        top.set_ylabel("samples/s (dotted: linear)")
        bottom.set_ylabel("efficiency % (dashed: cost model)")
        bottom.set_xlabel("ranks")
        bottom.set_ylim(0, 110)
        for ax in (top, bottom):
            ax.set_xticks(sorted({r["ranks"] for r in doc["rows"]}))
            ax.grid(alpha=0.3)
        top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
