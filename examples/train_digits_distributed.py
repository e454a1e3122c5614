"""train_digits.py, data-parallel over MPI ranks: the same network, data and recipe.

    pip install -e '.[distributed,data]'          # mpi4py + mpich (gives mpiexec)
    mpiexec -n 2 python examples/train_digits_distributed.py [--epochs 50] [--sync-bn]

Every rank runs the compiled training graph on its shard of each global batch of 32
(16 images per rank with 2 ranks); gradients are averaged with MPI Allreduce inside the
graph before the optimizer updates, so all ranks keep identical weights. BatchNorm uses
each rank's shard statistics (running statistics averaged over ranks) unless
``--sync-bn`` asks for global-batch statistics. Only rank 0 prints and writes files;
``--save`` checkpoints the trainer, and ``--resume`` continues such a checkpoint with
any number of ranks.
"""
from __future__ import annotations

import argparse
import time

import cnncomp
from frontend.zoo import digits_cnn
from runtime import data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32, help="the global batch")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sync-bn", action="store_true", help="BatchNorm over the global batch")
    ap.add_argument("--save", default="", help="write the trainer checkpoint here (rank 0)")
    ap.add_argument("--resume", default="", help="continue this checkpoint")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    t_start = time.perf_counter()
    dist = cnncomp.distributed.MPI(sync_batch_norm=args.sync_bn)
    x, y = data.load_digits()
    x_train, x_test, y_train, y_test = data.stratified_split(x, y, 0.2, seed=0)

    if args.resume:
        trainer = cnncomp.load_trainer(args.resume, distributed=dist)
    else:
        opt = cnncomp.optim.SGD(lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                schedule=cnncomp.optim.CosineLR(t_max=args.epochs))
        trainer = cnncomp.compile(digits_cnn(), training=True, loss="cross_entropy",
                                  optimizer=opt, distributed=dist)
    main_rank = trainer.rank == 0
    if main_rank:
        print(f"digits: {len(x_train)} train / {len(x_test)} test images; {trainer.world_size} "
              f"ranks x {cnncomp.distributed.threads_per_rank()} threads; global batch "
              f"{args.batch_size} ({args.batch_size // trainer.world_size} per rank); "
              f"BatchNorm {'synchronized' if args.sync_bn else 'per rank'}", flush=True)

    epochs = args.epochs - int(trainer.epoch)
    t0 = time.perf_counter()
    hist = trainer.fit(x_train, y_train, epochs=epochs, batch_size=args.batch_size,
                       validation_data=(x_test, y_test), augment=data.random_shift(1),
                       seed=args.seed, progress=not args.no_progress and main_rank)
    seconds = time.perf_counter() - t0
    metrics = trainer.evaluate(x_test, y_test)  # split across ranks, gathered on each
    comm = trainer.comm_stats()
    if args.save:
        trainer.save(args.save)  # writes on rank 0 only
    if main_rank:
        steps = max(len(hist["epoch"]) * (len(x_train) // args.batch_size), 1)
        acc = metrics["accuracy"]
        print(f"\ntest accuracy {acc * 100:.2f}% ({int(round(acc * len(y_test)))}/{len(y_test)})"
              f" after {int(trainer.epoch)} epochs on {trainer.world_size} ranks; "
              f"{time.perf_counter() - t_start:.1f} s in all, compilation included")
        print(f"training: {steps * args.batch_size / seconds:,.0f} images/s, communication "
              f"{comm['seconds'] / steps * 1e3:.2f} ms/step on rank 0 ({comm['calls']} "
              f"collectives)")
        if args.save:
            print(f"checkpoint saved to {args.save} (resume with --resume on any rank count)")


if __name__ == "__main__":
    main()
