"""Real-GPU checks at real sizes (marked `cuda`: run with `pytest --run-cuda -m cuda` on a
machine with an NVIDIA GPU; skipped elsewhere, and under the simulator, which would take
hours at these sizes)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import rel_err, rng
from tests.runtime.cuda.util import on_simulator, require_cuda_or_skip

require_cuda_or_skip()

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(on_simulator(), reason="real-size shapes need a real GPU")]


@pytest.mark.parametrize("name,batch", [("lenet5", 8), ("resnet18", 4), ("vgg11", 2),
                                        ("mobilenet", 4), ("inception", 2)])
def test_zoo_network_on_gpu_matches_cpu(name, batch):
    import cnncomp
    from frontend import zoo
    net = zoo.randomize_bn_stats(zoo.get(name), seed=0)
    x = rng(0).standard_normal((batch, *net.input_shape)).astype(np.float32)
    gpu = cnncomp.compile(net, target="cuda")
    cpu = cnncomp.compile(net, target="cpu")
    assert rel_err(gpu(x), cpu(x)) < 1e-4


@pytest.mark.parametrize("n,c,hw,o,k,s,g", [(8, 64, 32, 64, 3, 1, 1), (4, 128, 16, 256, 3, 2, 1),
                                            (4, 256, 8, 256, 3, 1, 256),
                                            (2, 3, 224, 64, 7, 2, 1)])
def test_large_convs_match_cpu(n, c, hw, o, k, s, g):
    from tests.helpers import run_kernel
    from tests.runtime.cuda.util import run_cuda_kernel
    r = rng(1)
    x = r.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = r.standard_normal((o, c // g, k, k)).astype(np.float32)
    p = k // 2
    out = (n, o, (hw + 2 * p - k) // s + 1, (hw + 2 * p - k) // s + 1)
    attrs = dict(out_channels=o, kernel_size=(k, k), stride=(s, s), padding=(p, p, p, p),
                 dilation=(1, 1), groups=g, bias=False, activation="relu", alpha=0.0)
    assert rel_err(run_cuda_kernel("conv2d", [x, w], out, attrs),
                   run_kernel("conv2d", [x, w], out, attrs)) < 1e-5
