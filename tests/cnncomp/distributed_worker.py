"""Programs that tests/cnncomp/test_distributed.py runs under ``mpiexec`` (not a test file).

    mpiexec -n 2 python tests/cnncomp/distributed_worker.py SCENARIO OUTDIR

Scenarios: ``steps`` (a few data-parallel steps of three networks, thread counts,
split inference), ``resume_a`` / ``resume_b`` (fit, checkpoint, resume on another rank
count), ``raise`` / ``kill`` / ``hang`` (rank 1 fails at step 2). Each rank writes what
it computed to OUTDIR; the test compares it with a single-process reference.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import cnncomp
import frontend as fe
import numpy as np

STEPS = 3


def plain_net():
    return fe.Sequential(
        fe.Conv2d(4, 3, padding=1, name="c1"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Conv2d(6, 3, name="c2"), fe.Tanh(), fe.Flatten(), fe.Linear(8, name="f1"),
        fe.ReLU(), fe.Linear(3, name="f2"), input_shape=(2, 8, 8), name="plain")


def bn_net(dropout: bool = False):
    layers = [fe.Conv2d(6, 3, padding=1, bias=False, name="c1"), fe.BatchNorm2d(name="bn1"),
              fe.ReLU()]
    if dropout:
        layers.append(fe.Dropout(0.25))
    layers += [fe.Conv2d(6, 3, stride=2, bias=False, name="c2"), fe.BatchNorm2d(name="bn2"),
               fe.ReLU(), fe.GlobalAvgPool2d(), fe.Linear(3, name="fc")]
    return fe.Sequential(*layers, input_shape=(2, 8, 8), name="bn_net")


# name -> (network, optimizer, cnncomp.distributed.MPI options, global batch)
CASES = {
    "plain": (plain_net, lambda: cnncomp.optim.SGD(0.05, momentum=0.9, nesterov=True,
                                                   weight_decay=1e-3), {}, 7),
    "sync": (lambda: bn_net(dropout=True), lambda: cnncomp.optim.Adam(0.01),
             {"sync_batch_norm": True, "overlap": True, "bucket_bytes": 256}, 9),
    "per_rank": (bn_net, lambda: cnncomp.optim.SGD(0.1, momentum=0.9), {"bucket_bytes": 0}, 8),
}


def batches(case: str, seed: int = 0):
    batch = CASES[case][3]
    r = np.random.default_rng(seed)
    return [(r.standard_normal((batch, 2, 8, 8)).astype(np.float32), r.integers(0, 3, batch))
            for _ in range(STEPS)]


def eval_array():
    return np.random.default_rng(9).standard_normal((13, 2, 8, 8)).astype(np.float32)


def shard(n: int, rank: int, size: int) -> np.ndarray:
    return np.array_split(np.arange(n), size)[rank]


def run_steps(out: str) -> None:
    info = {}
    for case, (net, opt, options, _) in CASES.items():
        trainer = cnncomp.compile(net(), training=True, optimizer=opt(),
                                  distributed=cnncomp.distributed.MPI(timeout=60, **options))
        r, n = trainer.rank, trainer.world_size
        losses = []
        for x, y in batches(case):
            mine = shard(len(x), r, n)
            losses.append(trainer.step(x[mine], y[mine]))
        logits = trainer.predict(eval_array(), batch_size=4)
        np.savez(os.path.join(out, f"{case}_rank{r}.npz"), losses=np.array(losses),
                 logits=logits, **trainer.parameters())
    model = cnncomp.compile(plain_net())  # any inference model, split over the ranks
    np.save(os.path.join(out, f"predict_rank{r}.npy"),
            cnncomp.distributed.predict(model, eval_array(), batch_size=3))
    import numba
    from threadpoolctl import threadpool_info
    info["numba_threads"] = numba.get_num_threads()
    info["blas_threads"] = [p["num_threads"] for p in threadpool_info()
                            if p["user_api"] == "blas"]
    info["cores"] = len(os.sched_getaffinity(0))
    info["ranks"] = n
    info["comm"] = trainer.comm_stats()
    with open(os.path.join(out, f"info_rank{r}.json"), "w") as f:
        json.dump(info, f)


def fit_data():
    r = np.random.default_rng(5)
    x = r.standard_normal((40, 2, 8, 8)).astype(np.float32)
    return x, (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 1, 0, 0] > 1)


RESUME = cnncomp.distributed.MPI(sync_batch_norm=True, timeout=60)


def resume_a(out: str) -> None:
    """2 ranks: 2 epochs, checkpoint, 1 more epoch (the uninterrupted run)."""
    x, y = fit_data()
    trainer = cnncomp.compile(bn_net(dropout=True), training=True, distributed=RESUME,
                              optimizer=cnncomp.optim.SGD(0.05, momentum=0.9,
                                                          schedule=cnncomp.optim.CosineLR(3)))
    hist = trainer.fit(x, y, epochs=2, batch_size=8, validation_data=(x[:11], y[:11]),
                       progress=False)
    trainer.save(os.path.join(out, "ckpt.cnnc"))
    trainer.save(os.path.join(out, f"written_by_rank{trainer.rank}.cnnc"))
    trainer.fit(x, y, epochs=1, batch_size=8, progress=False)
    np.savez(os.path.join(out, f"straight_rank{trainer.rank}.npz"), **trainer.parameters())
    with open(os.path.join(out, f"hist_rank{trainer.rank}.json"), "w") as f:
        json.dump(hist, f)


def resume_b(out: str) -> None:
    """Any number of ranks: resume the checkpoint for the third epoch."""
    x, y = fit_data()
    trainer = cnncomp.load_trainer(os.path.join(out, "ckpt.cnnc"), distributed=RESUME)
    assert trainer.steps == 10 and trainer.epoch == 2.0, (trainer.steps, trainer.epoch)
    trainer.fit(x, y, epochs=1, batch_size=8, progress=False)
    np.savez(os.path.join(out, f"resumed_{trainer.world_size}ranks_rank{trainer.rank}.npz"),
             **trainer.parameters())


def fault(kind: str, out: str) -> None:
    """Rank 1 fails at its third step; rank 0 keeps stepping.

    The first collectives (state broadcast, step 0) wait up to 60 s: on a loaded machine
    one rank may finish compiling well after the other. From step 1 on, 3 s."""
    from runtime.cpu import comm
    trainer = cnncomp.compile(plain_net(), training=True,
                              distributed=cnncomp.distributed.MPI(timeout=60))
    x, y = batches("plain")[0]
    for step in range(50):
        if step == 1:
            comm.configure(timeout=3)
        if trainer.rank == 1 and step == 2:
            if kind == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "hang":
                time.sleep(120)
        trainer.step(x[:4], y[:4])
        print(f"rank {trainer.rank} step {step}", flush=True)


if __name__ == "__main__":
    scenario, outdir = sys.argv[1], sys.argv[2]
    if scenario == "steps":
        run_steps(outdir)
    elif scenario == "resume_a":
        resume_a(outdir)
    elif scenario == "resume_b":
        resume_b(outdir)
    else:
        fault(scenario, outdir)
