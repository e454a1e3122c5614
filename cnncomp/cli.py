"""The ``cnncomp`` command: show, bench, train and run networks.

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
    from .bench import format_profile, format_table, plot_rows, profile_kernels, run_bench
    import cnncomp
    net = load_net(args.net)
    if args.train:
        from .bench import format_train_table, profile_train_kernels, run_train_bench
        from .optim import SGD
        rows = run_train_bench(net, batch=args.batch, repeat=args.repeat)
        print(format_train_table(rows, f"{net.name} training step (SGD momentum), batch "
                                       f"{args.batch}, target cpu"))
        if args.profile:
            for fuse in (False, True):
                t = cnncomp.compile(net, training=True, fuse=fuse,
                                    optimizer=SGD(0.01, momentum=0.9))
                prof = profile_train_kernels(t, args.batch)
                kind = "fused" if fuse else "unfused"
                print("\n" + format_profile(prof, f"per-kernel profile of a training step "
                                                   f"({kind})", top=30))
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
            kind = "fused" if fuse else "unfused"
            print("\n" + format_profile(prof, f"per-kernel profile ({kind})"))
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


def load_data(spec: str) -> tuple:
    """``digits`` (bundled with scikit-learn), ``mnist:DIR`` (the four IDX files, gzipped
    or not) or ``cifar10:DIR`` (the binary batches) -> (x_train, y_train, x_test, y_test)."""
    from runtime import data
    kind, _, where = spec.partition(":")
    if kind == "digits":
        x, y = data.load_digits()
        return None, x, y
    if kind == "mnist" and where:
        def find(stem: str) -> str:
            for name in (stem, stem + ".gz"):
                if os.path.exists(os.path.join(where, name)):
                    return os.path.join(where, name)
            raise SystemExit(f"cnncomp train: {stem}[.gz] not found in {where}")
        tr = data.read_mnist_idx(find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte"))
        te = data.read_mnist_idx(find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte"))
        return (te[0], te[1]), tr[0], tr[1]
    if kind == "cifar10" and where:
        train = [os.path.join(where, f"data_batch_{i}.bin") for i in range(1, 6)]
        train = [f for f in train if os.path.exists(f)]
        if not train:
            raise SystemExit(f"cnncomp train: no data_batch_N.bin files in {where}")
        test = os.path.join(where, "test_batch.bin")
        held = data.read_cifar10_bin(test) if os.path.exists(test) else None
        x, y = data.read_cifar10_bin(*train)
        return held, x, y
    raise SystemExit(f"cnncomp train: unknown --data {spec!r}; use digits, mnist:DIR or "
                     "cifar10:DIR")


def cmd_train(args: argparse.Namespace) -> int:
    import cnncomp
    from runtime import data
    from .bench import plot_history
    net = load_net(args.net)
    held, x, y = load_data(args.data)
    if held is None:
        x, x_te, y, y_te = data.stratified_split(x, y, args.test_fraction, seed=0)
    else:
        x_te, y_te = held
    want = tuple(net.to_graph().values[net.to_graph().inputs[0]].shape[1:])
    if tuple(x.shape[1:]) != want:
        raise SystemExit(f"cnncomp train: {net.name} takes inputs of shape {want} but the "
                         f"{args.data} images are {tuple(x.shape[1:])}; pick a network "
                         "built for that data (e.g. digits_cnn for digits, lenet5 for mnist)")
    sched = cnncomp.optim.CosineLR(args.epochs) if args.cosine else None
    opt = (cnncomp.optim.Adam(args.lr, schedule=sched) if args.optimizer == "adam" else
           cnncomp.optim.SGD(args.lr, momentum=0.9, nesterov=True, weight_decay=args.wd,
                             schedule=sched))
    trainer = cnncomp.compile(net, training=True, optimizer=opt, fuse=not args.no_fuse)
    augment = data.random_shift(1) if args.augment else None
    hist = trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch_size,
                       validation_data=(x_te, y_te), augment=augment)
    print(f"test accuracy {100 * hist['val_accuracy'][-1]:.2f}% on {len(y_te)} held-out images")
    if args.plot:
        plot_history(hist, args.plot, f"cnncomp: {net.name} on {args.data}")
        print(f"training curves written to {args.plot}")
    if args.save:
        trainer.export().save(args.save)
        print(f"inference model saved to {args.save} (cnncomp.load)")
    if args.checkpoint:
        trainer.save(args.checkpoint)
        print(f"trainer checkpoint saved to {args.checkpoint} (cnncomp.load_trainer)")
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
    t = sub.add_parser("train", help="train a network on real data (digits, MNIST, CIFAR-10)")
    t.add_argument("net", help="e.g. digits_cnn, or a .py file")
    t.add_argument("--data", default="digits", help="digits | mnist:DIR | cifar10:DIR")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--wd", type=float, default=5e-4, help="SGD weight decay")
    t.add_argument("--cosine", action="store_true", help="cosine learning-rate schedule")
    t.add_argument("--augment", action="store_true", help="random 1-pixel shifts")
    t.add_argument("--test-fraction", type=float, default=0.2,
                   help="held-out share when the data has no test split (digits)")
    t.add_argument("--no-fuse", action="store_true")
    t.add_argument("--plot", help="write the training curves (PNG) here")
    t.add_argument("--save", help="save the trained inference model (.cnnc) here")
    t.add_argument("--checkpoint", help="save the trainer (resumable) here")
    t.set_defaults(fn=cmd_train)
    r = sub.add_parser("run", help="compile and run on random data; print the summary")
    r.add_argument("net")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--no-fuse", action="store_true")
    r.set_defaults(fn=cmd_run)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
