"""The ``ddp-bench`` command (also ``python -m ddp.bench``).

    ddp-bench scaling --ranks 1,2,4 --model mlp,cnn --steps 20 --out DIR
    ddp-bench bandwidth --ranks 2 --out DIR
    ddp-bench sweep --ranks 2 --model mlp --caps 0.25,1,5,25,100 --out DIR
    ddp-bench compare DIR1 DIR2          (or ddp-bench --compare DIR1 DIR2)
    ddp-bench predict --from DIR --ranks 8,64,512,1024

Each sub-command takes ``--config FILE`` (YAML, keys = its options; flags override) and
``--markdown`` (print Markdown tables, as in docs/performance.md). Jobs start through the
launcher (bundled MPICH, or ``--mpiexec``/``--hostfile``/``--mpiexec-args`` for a cluster's
MPI); PyTorch DDP (gloo) runs beside ddp in ``scaling`` when torch is installed.

This is a tool on top of everything else (it imports ddp, the launcher and, when present,
torch and matplotlib); nothing in ddp imports it.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

from launcher.config import CommaList, add_config_argument, parse_args

from . import costmodel, jobs, models, report

# allreduce message sizes for the α-β fit: 4 KiB to 16 MiB by factors of 4
FIT_SIZES = [4 ** k for k in range(6, 13)]
BANDWIDTH_SIZES = [4 ** k for k in range(5, 14)]  # 1 KiB to 64 MiB
PREDICT_RANKS = [8, 16, 32, 64, 128, 256, 512, 1024]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ddp-bench", description="Scaling, allreduce bandwidth and bucket-size benchmarks "
        "of ddp's DistributedDataParallel (beside PyTorch DDP), and a cost model that "
        "predicts efficiency past one machine.",
        epilog="docs/performance.md and docs/scaling.md show what each command prints.")
    p.add_argument("--compare", nargs=2, metavar=("DIR1", "DIR2"),
                   help="show two runs side by side (same as the compare sub-command)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    job = argparse.ArgumentParser(add_help=False)
    g = job.add_argument_group("jobs")
    g.add_argument("--out", default="ddp-bench-results", metavar="DIR",
                   help="directory for the JSON (and Markdown, plot) results")
    g.add_argument("--warmup", type=int, default=3, help="untimed steps or repetitions first")
    g.add_argument("--mpiexec", metavar="PATH", help="mpiexec to use (as launcher --mpiexec)")
    g.add_argument("--hostfile", metavar="FILE", help="machines (as launcher --hostfile)")
    g.add_argument("--mpiexec-args", default="", metavar='"ARGS"',
                   help="extra mpiexec arguments (as launcher --mpiexec-args)")
    g.add_argument("--wait-idle", type=float, default=0, metavar="S",
                   help="start each job on an idle machine: wait up to S seconds, and rerun a "
                        "job (up to 3 times) when other processes used more than 0.1 core")
    g.add_argument("--markdown", action="store_true", help="print Markdown tables")

    s = sub.add_parser("scaling", parents=[job], help="weak and strong scaling over rank counts",
                       description="Weak scaling (batch per rank fixed) and strong scaling "
                       "(global batch fixed) of DDP training steps; writes results.json, "
                       "results.md and scaling.png (with matplotlib).")
    s.add_argument("--ranks", type=CommaList(int), default=[1, 2], metavar="1,2,4",
                   help="rank counts (1 is always measured: the reference)")
    s.add_argument("--model", type=CommaList(str), default=["mlp"], metavar="mlp,cnn",
                   help=f"benchmark models: {', '.join(models.MODELS)}")
    s.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    s.add_argument("--batch", type=int, default=128, help="samples per rank (weak scaling)")
    s.add_argument("--global-batch", type=int, metavar="N",
                   help="samples per step over all ranks (strong scaling; default --batch)")
    s.add_argument("--reps", type=int, default=10,
                   help="repetitions of each allreduce size for the α-β fit")
    s.add_argument("--repeat", type=int, default=1, help="run every job this many times; "
                   "figures are medians of the runs")
    s.add_argument("--no-torch", action="store_true", help="skip PyTorch DDP even if installed")
    add_config_argument(s)

    b = sub.add_parser("bandwidth", parents=[job], help="allreduce bus bandwidth vs raw mpi4py",
                       description="Allreduce time and bus bandwidth per message size: raw "
                       "mpi4py against ddp's communicator; α and β fit; then the gradient "
                       "buckets of real models, copies included. Writes bandwidth.json.")
    b.add_argument("--ranks", type=CommaList(int), default=[2], metavar="2,4")
    b.add_argument("--sizes", type=CommaList(int), default=BANDWIDTH_SIZES, metavar="BYTES,...",
                   help="message sizes in bytes (default 1 KiB to 64 MiB by factors of 4)")
    b.add_argument("--reps", type=int, default=20, help="repetitions per size and variant")
    b.add_argument("--model", type=CommaList(str), default=["mlp"], metavar="mlp,cnn",
                   help="models whose DDP buckets to time ('' for none)")
    b.add_argument("--batch", type=int, default=32, help="batch of the model's warm-up step")
    add_config_argument(b)

    w = sub.add_parser("sweep", parents=[job], help="DDP step time against bucket_cap_mb",
                       description="Step time, efficiency and exposed communication for each "
                       "bucket_cap_mb (and synchronous communication), with the cost model's "
                       "prediction. Writes sweep.json.")
    w.add_argument("--ranks", type=int, default=2)
    w.add_argument("--model", default="mlp", choices=models.MODELS)
    w.add_argument("--caps", type=CommaList(float), default=[0.25, 1, 5, 25, 100],
                   metavar="MB,...")
    w.add_argument("--steps", type=int, default=20)
    w.add_argument("--batch", type=int, default=128)
    w.add_argument("--reps", type=int, default=10)
    w.add_argument("--repeat", type=int, default=1)
    add_config_argument(w)

    c = sub.add_parser("compare", help="two runs side by side")
    c.add_argument("dirs", nargs=2, metavar="DIR", help="result directories (or JSON files)")
    c.add_argument("--markdown", action="store_true")

    r = sub.add_parser("predict", help="the cost model at 8 to 1,024 ranks",
                       description="Weak-scaling efficiency predicted by the α-β model for "
                       "ResNet-50 and BERT-base gradients (and the benchmark models of a "
                       "scaling run), next to the published figures.")
    r.add_argument("--from", dest="source", metavar="DIR",
                   help="a scaling run: adds its models (1-rank compute, ddp's buckets) and its "
                        "measured link")
    r.add_argument("--ranks", type=CommaList(int), default=PREDICT_RANKS, metavar="8,...")
    r.add_argument("--link", type=CommaList(str), default=list(costmodel.LINKS),
                   metavar="25GbE,100Gb", help=f"interconnects: {', '.join(costmodel.LINKS)}")
    r.add_argument("--alpha-us", type=float, help="a link of your own: latency in µs ...")
    r.add_argument("--beta-gbps", type=float, help="... and bandwidth in GB/s")
    r.add_argument("--algorithm", default="ring", choices=costmodel.ALGORITHMS)
    r.add_argument("--markdown", action="store_true")
    add_config_argument(r)
    return p


# ------------------------------------------------------------------------------- commands
def frameworks(no_torch):
    if no_torch:
        return ["ddp"]
    try:
        import torch  # noqa: F401
    except ImportError:
        print("(PyTorch is not installed: ddp only)")
        return ["ddp"]
    return ["ddp", "torch"]


def check_models(parser, names, libs):
    for name in names:
        if name not in models.MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(models.MODELS)}")
        for lib in libs:
            try:
                models.require(lib, name)
            except models.ModelUnavailable as exc:
                parser.error(str(exc))


def machine():
    return {"cores": os.cpu_count(), "load_average": os.getloadavg()[0],
            "platform": platform.platform(), "python": platform.python_version()}


def cmd_scaling(args, parser):
    ranks = sorted(set(args.ranks) | {1})
    if min(ranks) < 1:
        parser.error("--ranks must be positive")
    global_batch = args.global_batch or args.batch
    for p in ranks:
        if global_batch % p:
            parser.error(f"--global-batch {global_batch} does not split evenly over {p} ranks")
    fws = frameworks(args.no_torch)
    import ddp
    libs = [ddp] + ([__import__("torch")] if "torch" in fws else [])
    check_models(parser, args.model, libs)
    runs = []
    for _ in range(args.repeat):
        runs.append({fw: {p: jobs.run({"framework": fw, "task": "scaling", "models": args.model,
                                       "batches": sorted({args.batch, global_batch // p},
                                                         key=lambda b: b != args.batch),
                                       "steps": args.steps, "warmup": args.warmup,
                                       "sizes": FIT_SIZES, "reps": args.reps}, p, args)
                          for p in ranks} for fw in fws})
    results = {fw: {p: report.median_of([r[fw][p] for r in runs]) for p in ranks} for fw in fws}
    doc = {"kind": "scaling", "schema": 1, "command": "ddp-bench " + " ".join(sys.argv[1:]),
           "settings": {"ranks": ranks, "models": args.model, "batch": args.batch,
                        "global_batch": global_batch, "steps": args.steps,
                        "warmup": args.warmup, "repeat": args.repeat, "frameworks": fws},
           "machine": machine(), "models": report.models_of(results, args.model),
           "links": report.links_of(results),
           "jobs": {fw: {str(p): {"background_cores": j["background_cores"],
                                  "wall_s": j["wall_s"]} for p, j in by_p.items()}
                    for fw, by_p in results.items()},
           "rows": report.scaling_rows(results, args.model, ranks, args.batch, global_batch),
           "key": report.SCALING_KEY, "metrics": report.SCALING_METRICS}
    finish(doc, args, "results")
    write_plot(doc, args.out)
    return doc


def write_plot(doc, out):
    """``out/scaling.png``, or a note saying why not (matplotlib is an optional extra)."""
    path = os.path.join(out, "scaling.png")
    try:
        report.plot_scaling(doc, path)
    except ImportError:
        print("(no plot: matplotlib is not installed; pip install 'ddp[bench]' adds it — "
              "results.json is written)")
        return None
    print(f"plot: {path}")
    return path


def cmd_bandwidth(args, parser):
    import ddp
    names = [m for m in args.model if m]
    check_models(parser, names, [ddp])
    if min(args.ranks) < 2:
        parser.error("bandwidth needs --ranks of 2 or more (one rank moves nothing)")
    doc = {"kind": "bandwidth", "schema": 1, "command": "ddp-bench " + " ".join(sys.argv[1:]),
           "machine": machine(), "ranks": {}, "rows": [], "key": ["ranks", "bytes"],
           "metrics": ["raw_busbw_GBps", "ddp_busbw_GBps", "ddp_vs_raw", "iallreduce_vs_raw"]}
    for p in args.ranks:
        res = jobs.run({"framework": "ddp", "task": "bandwidth", "models": names,
                        "batches": [args.batch], "sizes": args.sizes, "reps": args.reps,
                        "warmup": args.warmup}, p, args)
        series = {"raw": [], "ddp": []}
        for point in res["sizes"]:
            t = point["seconds"]
            raw, mine, nb = t["raw mpi4py"], t["ddp Allreduce"], t["ddp Iallreduce+wait"]
            n = point["bytes"]
            series["raw"].append((n, raw))
            series["ddp"].append((n, mine))
            doc["rows"].append({"ranks": p, "bytes": n, "raw_ms": raw * 1e3,
                                "raw_busbw_GBps": costmodel.bus_bandwidth(n, raw, p) / 1e9,
                                "ddp_ms": mine * 1e3,
                                "ddp_busbw_GBps": costmodel.bus_bandwidth(n, mine, p) / 1e9,
                                "ddp_vs_raw": raw / mine, "iallreduce_ms": nb * 1e3,
                                "iallreduce_vs_raw": raw / nb})
        fit = {}
        for name, points in series.items():
            alpha, beta = costmodel.fit_alpha_beta(*zip(*points), p)
            fit[name] = {"alpha_s": alpha, "beta_Bps": beta}
        doc["ranks"][str(p)] = {"fit": fit, "models": res["models"],
                                "background_cores": res["background_cores"]}
    finish(doc, args, "bandwidth")
    return doc


def cmd_sweep(args, parser):
    import ddp
    check_models(parser, [args.model], [ddp])
    if args.ranks < 2:
        parser.error("sweep needs --ranks of 2 or more")
    spec = {"framework": "ddp", "task": "sweep", "models": [args.model], "batches": [args.batch],
            "caps": args.caps, "steps": args.steps, "warmup": args.warmup, "sizes": FIT_SIZES,
            "reps": args.reps}
    runs = [{p: jobs.run(spec, p, args) for p in (1, args.ranks)} for _ in range(args.repeat)]
    one, many = (report.median_of([r[p] for r in runs]) for p in (1, args.ranks))
    t1, p = one["configs"]["plain"]["step_ms"], args.ranks
    plain = many["configs"]["plain"]
    rows = []
    for label in [f"cap/{c:g}" for c in args.caps] + ["sync"]:
        cfg, buckets = many["configs"][label], many["buckets"][label]
        pred = report.prediction(plain, buckets, many["link"], p, args.batch,
                                 args.batch / t1 * 1e3)
        rows.append({"bucket_cap_mb": label.split("/")[-1], "buckets": len(buckets),
                     "bucket_bytes": buckets, "step_ms": cfg["step_ms"],
                     "efficiency": t1 / cfg["step_ms"],
                     "exposed_comm_ms": cfg["exposed_comm_ms"], "predicted": pred})
    doc = {"kind": "sweep", "schema": 1, "command": "ddp-bench " + " ".join(sys.argv[1:]),
           "settings": {"model": args.model, "ranks": p, "batch": args.batch,
                        "steps": args.steps, "caps": args.caps},
           "machine": machine(), "one_rank_step_ms": t1, "plain_step_ms": plain["step_ms"],
           "link": {k: v for k, v in many["link"].items() if k != "sweep"},
           "rows": rows, "key": ["bucket_cap_mb"],
           "metrics": ["step_ms", "efficiency", "exposed_comm_ms"]}
    finish(doc, args, "sweep")
    return doc


def cmd_compare(dirs, markdown=False):
    a, b = (report.read_doc(d) for d in dirs)
    print(f"A = {dirs[0]}  ({a.get('command', '')})\nB = {dirs[1]}  ({b.get('command', '')})\n")
    print(report.compare(a, b, markdown=markdown))


def cmd_predict(args, parser):
    links = []
    for name in args.link:
        if name not in costmodel.LINKS:
            parser.error(f"unknown link {name!r}; choose from {', '.join(costmodel.LINKS)}")
        links.append(costmodel.LINKS[name])
    if (args.alpha_us is None) != (args.beta_gbps is None):
        parser.error("--alpha-us and --beta-gbps go together")
    if args.alpha_us is not None:
        links.append(costmodel.Link(f"α {args.alpha_us:g} µs, β {args.beta_gbps:g} GB/s",
                                    args.alpha_us * 1e-6, args.beta_gbps * 1e9))
    workloads = [(w, links) for w in (costmodel.RESNET50, costmodel.BERT_BASE)]
    if args.source:
        doc = report.read_doc(args.source)
        if doc.get("kind") != "scaling":
            parser.error(f"--from needs a scaling run, {args.source} holds a {doc.get('kind')} run")
        measured = measured_link(doc)
        for name, info in doc["models"].items():
            row = next(r for r in doc["rows"] if (r["framework"], r["model"], r["mode"],
                                                   r["ranks"]) == ("ddp", name, "weak", 1))
            work = costmodel.Workload(f"{info['title']} (measured here)", info["buckets"],
                                      row["forward_ms"] / 1e3, row["backward_ms"] / 1e3,
                                      row["optimizer_ms"] / 1e3)
            workloads.append((work, links + ([measured] if measured else [])))
    print(predict_tables(workloads, args.ranks, args.algorithm, args.markdown))


def measured_link(doc):
    fits = doc["links"].get("ddp", {})
    if not fits:
        return None
    p = max(fits, key=int)
    fit = fits[p]
    return costmodel.Link(f"this machine ({p} ranks, shared memory)", fit["alpha_s"],
                          fit["beta_Bps"])


def predict_tables(workloads, ranks, algorithm, markdown):
    """Efficiency (with overlap) per workload, link and rank count; the compute per step that
    90 % needs at the largest rank count; the published figures."""
    top = max(ranks)
    headers = ["workload", "gradient", "compute ms", "link"] + [str(p) for p in ranks] + \
              [f"compute for 90 % at {top}"]
    rows = []
    for work, links in workloads:
        for link in links:
            eff = [costmodel.predict(work, p, link, algorithm).efficiency for p in ranks]
            need = costmodel.compute_for_efficiency(work, top, link, 0.9, algorithm)
            rows.append([work.name, f"{work.gradient_bytes / 1e6:.1f} MB",
                         work.compute_s * 1e3, link.name] + [report.pct(e) for e in eff] +
                        [f"{need * 1e3:.0f} ms"])
    links = {id(link): link for _, ls in workloads for link in ls}.values()
    out = [f"predicted weak-scaling efficiency, {algorithm} allreduce, buckets of 25 MiB "
           f"(first 1 MiB) overlapping backward", report.table(headers, rows, markdown), "",
           "links: " + "; ".join(f"{link.name}: α = {link.alpha * 1e6:g} µs, β = "
                                 f"{link.beta / 1e9:.3g} GB/s" for link in links),
           "", "the model in the published settings (compute per step assumed, see "
           "docs/scaling.md):",
           report.table(["source", "ranks", "workload", "setup", "compute ms", "published",
                         "model", "model, no overlap"],
                        [published_row(r, algorithm) for r in costmodel.PUBLISHED], markdown)]
    return "\n".join(out)


def published_row(ref, algorithm):
    work, link = ref["workload"], costmodel.LINKS[ref["link"]]
    pred = costmodel.predict(work, ref["ranks"], link, algorithm)
    return [ref["source"], ref["ranks"], work.name, ref["setup"], work.compute_s * 1e3,
            ref["efficiency"], report.pct(pred.efficiency), report.pct(pred.efficiency_serial)]


def finish(doc, args, stem):
    """Write ``DIR/stem.json`` and ``DIR/stem.md``, print the tables."""
    os.makedirs(args.out, exist_ok=True)
    report.write_json(doc, os.path.join(args.out, stem + ".json"))
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(f"`{doc['command']}`\n\n{report.render(doc, markdown=True)}\n")
    print()
    print(report.render(doc, markdown=args.markdown))
    print(f"\nwritten: {os.path.join(args.out, stem + '.json')}, {stem}.md")


COMMANDS = {"scaling": cmd_scaling, "bandwidth": cmd_bandwidth, "sweep": cmd_sweep,
            "predict": cmd_predict}


def main(argv=None) -> int:
    """Entry point of the ``ddp-bench`` console script and of ``python -m ddp.bench``."""
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.compare:
        cmd_compare(args.compare)
    elif args.command == "compare":
        cmd_compare(args.dirs, args.markdown)
    elif args.command in COMMANDS:
        COMMANDS[args.command](args, parser)
    else:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
