"""VGG-16 with batch norm (Simonyan and Zisserman 2014), CIFAR-sized.

    python examples/vgg16.py [--batch 8]

The network is defined in the DSL in frontend/zoo.py (vgg16_cifar). This script compiles it
fused and unfused, runs a batch of random CIFAR-sized images and prints what ran.
"""
from _common import cifar_batch, parse, run_example

from frontend import zoo

if __name__ == "__main__":
    args = parse(__doc__.split("\n")[0])
    net = zoo.randomize_bn_stats(zoo.vgg16_cifar(), seed=0)
    run_example(net, cifar_batch(args.batch), args.repeat)
