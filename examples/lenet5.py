"""LeNet-5 (LeCun et al. 1998) on real handwritten digits.

    python examples/lenet5.py [--batch 16]

Compiles the network fused and unfused, runs a batch of scikit-learn's bundled 8x8
digits (upsampled to 28x28; random images if scikit-learn is missing) and prints what
ran. The weights are untrained: examples/train_digits.py will train it.
"""
from _common import parse, run_example

from demo import digits_batch
from frontend import zoo

if __name__ == "__main__":
    args = parse(__doc__.split("\n")[0], batch=16)
    x, what = digits_batch(args.batch)
    print(f"input: {what}")
    y = run_example(zoo.lenet5(), x, args.repeat)
    print(f"predicted classes (untrained): {y.argmax(1)}")
