"""The ``cnncomp`` command: show, bench and run networks.

NET is a built-in name (lenet5, resnet18, vgg11, mobilenet, inception, ...) or a Python
file that defines a network: a module-level ``net``, a ``build()`` function, or a single
``frontend.Model`` among its globals.
"""
from __future__ import annotations

import argparse
import os
import runpy
import shutil
import subprocess
import sys
from typing import Any, Optional, Sequence


def load_net(spec: str) -> Any:
    """A network from a built-in name or a Python file."""
    import frontend as fe
    if spec.endswith(".py") or os.path.sep in spec:
        if not os.path.exists(spec):
            raise SystemExit(f"cnncomp: no such file: {spec}")
        ns = runpy.run_path(spec, run_name="cnncomp_net")
        if isinstance(ns.get("net"), fe.Model):
            return ns["net"]
        if callable(ns.get("build")):
            return ns["build"]()
        models = [v for v in ns.values() if isinstance(v, fe.Model)]
        if len(models) == 1:
            return models[0]
        raise SystemExit(f"cnncomp: {spec} must define `net = ...`, a `build()` function or "
                         f"exactly one network (found {len(models)})")
    from frontend import zoo
    try:
        return zoo.get(spec)
    except KeyError as e:
        raise SystemExit(f"cnncomp: {e.args[0]}") from None


def cmd_show(args: argparse.Namespace) -> int:
    import cnncomp
    net = load_net(args.net)
    out = args.out or f"cnncomp-show-{net.name}"
    model = cnncomp.compile(net, fuse=not args.no_fuse, dump_dir=out, verify=True)
    print("== before passes ==")
    print(model.source_graph.to_text())
    print("\n== after passes ==")
    print(model.graph.to_text())
    print()
    print(model.summary())
    dots = sorted(f for f in os.listdir(out) if f.endswith(".dot"))
    if shutil.which("dot"):
        for f in dots:
            subprocess.run(["dot", "-Tsvg", "-O", os.path.join(out, f)], check=False)
        print(f"\nwrote {len(dots)} graphs (.txt, .dot, .svg) to {out}/")
    else:
        print(f"\nwrote {len(dots)} graphs (.txt, .dot) to {out}/ (install graphviz for SVG: "
              "apt-get install graphviz)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_table, plot_rows, profile_kernels, run_bench
    import cnncomp
    net = load_net(args.net)
    if args.train:
        from .bench import format_train_table, run_train_bench
        rows = run_train_bench(net, batch=args.batch, repeat=args.repeat)
        print(format_train_table(rows, f"{net.name} training step (SGD momentum), batch "
                                       f"{args.batch}, target cpu"))
        return 0
    rows = run_bench(net, batch=args.batch, repeat=args.repeat)
    title = f"{net.name}, batch {args.batch}, target cpu"
    print(format_table(rows, title))
    if args.plot:
        plot_rows(rows, args.plot, title)
        print(f"\nplot written to {args.plot}")
    if args.profile:
        for fuse in (False, True):
            m = cnncomp.compile(net, fuse=fuse)
            prof = profile_kernels(m, args.batch)
            print(f"\n### per-kernel profile ({'fused' if fuse else 'unfused'})\n")
            print("| kernel | ops | ms | share | GFLOP/s |\n|---|---|---|---|---|")
            for p in sorted(prof, key=lambda p: -p["ms"]):
                print(f"| {p['kernel']} | {p['ops']} | {p['ms']:.3f} | {100 * p['share']:.1f}% "
                      f"| {p['gflops']:.2f} |")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np
    import cnncomp
    net = load_net(args.net)
    model = cnncomp.compile(net, fuse=not args.no_fuse)
    g = model.graph
    x = np.random.default_rng(0).standard_normal(
        g.values[g.inputs[0]].concrete_shape(args.batch)).astype(np.float32)
    y = model(x)
    print(model.summary())
    print(f"\noutput {y.shape}: first row {np.array2string(y[0][:10], precision=4)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="cnncomp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("show", help="print the graph before/after the passes; write DOT/SVG")
    s.add_argument("net")
    s.add_argument("--out", help="folder for per-pass dumps (default cnncomp-show-NAME)")
    s.add_argument("--no-fuse", action="store_true")
    s.set_defaults(fn=cmd_show)
    b = sub.add_parser("bench", help="fused vs unfused vs each pass, side by side")
    b.add_argument("net")
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--repeat", type=int, default=10)
    b.add_argument("--train", action="store_true", help="time a training step")
    b.add_argument("--plot", help="write a bar chart (PNG) here")
    b.add_argument("--profile", action="store_true", help="per-kernel time table")
    b.set_defaults(fn=cmd_bench)
    r = sub.add_parser("run", help="compile and run on random data; print the summary")
    r.add_argument("net")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--no-fuse", action="store_true")
    r.set_defaults(fn=cmd_run)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
