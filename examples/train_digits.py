"""Train a LeNet-style CNN on scikit-learn's handwritten digits, end to end in cnncomp.

    python examples/train_digits.py [--epochs 50] [--plot train_digits.png]

Data: the 1797 real 8x8 digit images bundled with scikit-learn (no download). Test
split: a seeded (seed 0), stratified 20% of the data (359 images; 1438 for training),
made by ``runtime.data.stratified_split``. The network (``frontend.zoo.digits_cnn``:
conv-BN-ReLU x2, max-pool, conv-ReLU, max-pool, Linear-ReLU-Dropout, Linear) is compiled with training=True: one
graph holds the forward, the loss, the backward built by the differentiate pass and
the SGD updates, fused and memory-planned like an inference graph. Training uses
Nesterov momentum with a cosine learning-rate schedule and random 1-pixel shifts.
At the end the script exports the inference model (BatchNorm folded), reports test
accuracy and saves the training curves.
"""
from __future__ import annotations

import argparse
import time

import cnncomp
from cnncomp.bench import plot_history
from frontend.zoo import digits_cnn
from runtime import data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default="train_digits.png", help="training-curve image")
    ap.add_argument("--save", default="", help="also save the trained model here (.cnnc)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    t_start = time.perf_counter()
    x, y = data.load_digits()
    x_train, x_test, y_train, y_test = data.stratified_split(x, y, 0.2, seed=0)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, 8x8, 10 classes")

    net = digits_cnn()
    opt = cnncomp.optim.SGD(lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4,
                            schedule=cnncomp.optim.CosineLR(t_max=args.epochs))
    t0 = time.perf_counter()
    trainer = cnncomp.compile(net, training=True, loss="cross_entropy", optimizer=opt)
    print(f"compiled the training graph in {time.perf_counter() - t0:.1f} s: "
          f"{len(trainer.graph.nodes)} nodes")

    hist = trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                       validation_data=(x_test, y_test), augment=data.random_shift(1),
                       seed=args.seed, progress=not args.no_progress)
    acc = trainer.evaluate(x_test, y_test)["accuracy"]
    model = trainer.export()  # the inference model: BN folded into the convs, fused
    total = time.perf_counter() - t_start
    print(f"\ntest accuracy {acc * 100:.2f}% ({int(round(acc * len(y_test)))}/{len(y_test)}) "
          f"after {args.epochs} epochs; {total:.1f} s in all, compilation included")
    print("inference kernels:", ", ".join("+".join(k.ops) for k in model.kernels))
    if args.plot:
        try:
            plot_history(hist, args.plot, "cnncomp: LeNet-style CNN on scikit-learn digits",
                         target=0.98)
            print(f"training curves saved to {args.plot}")
        except SystemExit as e:
            print(e)
    if args.save:
        model.save(args.save)
        print(f"model saved to {args.save} (load with cnncomp.load)")


if __name__ == "__main__":
    main()
