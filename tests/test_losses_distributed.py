"""Cross-device negatives under 2 gloo CPU processes equal the single-process loss on the concatenated batch.

Ranks hold different numbers of rows (3 and 2) and share passage keys across ranks, so the offsets, the
reduction weight and the false-negative masks are all exercised. Per rank: the mean of the ranks' logged
values is the single-process value; each rank's local embeddings get ``world`` times the single-process
gradient (DDP averages it back); and with a DDP-wrapped encoder the parameter gradients equal the
single-process ones.
"""
import gc
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from helpers_losses import make_loss_fn

WORLD = 2
ROWS = [slice(0, 3), slice(3, 5)]  # rank 0 holds rows 0-2, rank 1 rows 3-4
CASES = {
    "everything": dict(temperature=0.1, directions=["q2p", "q2q", "p2q"], mrl_enabled=True, mrl_dims=[2],
                       mrl_dim_weights=[0.5], spread_enabled=True, spread_t=2.0, kd_enabled=True, kd_weight=0.5),
    "own_group": dict(temperature=0.1),  # use_in_batch=False below: only the row counts are exchanged
    "local_only": dict(temperature=0.1, cross_device_negatives=False),
}


def data():
    g = torch.Generator().manual_seed(0)
    x = {k: torch.randn(*s, generator=g, dtype=torch.float64) for k, s in
         [("xq", (5, 6)), ("xp", (5, 6)), ("xn", (5, 2, 6)), ("q", (5, 4)), ("p", (5, 4)), ("n", (5, 2, 4))]}
    x["p"][3], x["xp"][3] = x["p"][1], x["xp"][1]  # rows 1 (rank 0) and 3 (rank 1) share a positive
    x["pos_keys"] = torch.tensor([0, 1, 2, 1, 4])
    # Row 4 (rank 1) has row 0's positive (rank 0) among its hard negatives.
    x["neg_keys"] = torch.tensor([[10, 11], [12, 13], [14, 15], [16, 17], [0, 18]])
    x["pos_scores"] = torch.randn(5, generator=g, dtype=torch.float64)
    x["neg_scores"] = torch.randn(5, 2, generator=g, dtype=torch.float64)
    return x


def run_case(name, x, rows, leaves=None):
    """Loss dict and gradients w.r.t. q, p, n on ``rows`` of the data."""
    q, p, n = leaves or [x[k][rows].clone().requires_grad_() for k in ("q", "p", "n")]
    out = make_loss_fn(**CASES[name])(
        q, p, n, pos_keys=x["pos_keys"][rows], neg_keys=x["neg_keys"][rows], use_in_batch=name != "own_group",
        pos_scores=x["pos_scores"][rows], neg_scores=x["neg_scores"][rows])
    out["loss"].backward()
    return {k: v.item() for k, v in out.items()}, [q.grad, p.grad, n.grad]


def encoder():
    torch.manual_seed(0)
    return nn.Linear(6, 4, dtype=torch.float64)


def encoded_loss(enc, x, rows):
    """The 'everything' loss of a linear encoder; one forward for all towers (one DDP call per step)."""
    b = x["xq"][rows].shape[0]
    emb = enc(torch.cat([x["xq"][rows], x["xp"][rows], x["xn"][rows].flatten(0, 1)]))
    q, p, n = emb[:b], emb[b:2 * b], emb[2 * b:].view(b, 2, 4)
    return make_loss_fn(**CASES["everything"])(
        q, p, n, pos_keys=x["pos_keys"][rows], neg_keys=x["neg_keys"][rows],
        pos_scores=x["pos_scores"][rows], neg_scores=x["neg_scores"][rows])["loss"]


def worker(rank, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=WORLD)
    try:
        x, rows = data(), ROWS[rank]
        result = {name: run_case(name, x, rows) for name in CASES}
        ddp = DDP(encoder())
        encoded_loss(ddp, x, rows).backward()
        result["ddp"] = [prm.grad.clone() for prm in ddp.module.parameters()]
        torch.save(result, os.path.join(tmp, f"rank{rank}.pt"))
        # DDP's reducer holds the process group and its last all-reduce's work (with tensors): left alive, the
        # group outlives destroy_process_group and dies during interpreter shutdown, where a gloo thread that
        # needs the GIL is force-unwound -> "terminate called without an active exception" (SIGABRT). Drop it,
        # collect, and let every rank finish its traffic before the group goes (l2e.train.trainer does the same).
        del ddp
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_cross_device_loss_and_gradients_equal_single_process(tmp_path):
    mp.spawn(worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    x, everything = data(), slice(0, 5)
    for name in ("everything", "own_group"):
        values, grads = run_case(name, x, everything)
        assert set(ranks[0][name][0]) == set(values)
        for key, value in values.items():
            mean = sum(r[name][0][key] for r in ranks) / WORLD
            assert abs(mean - value) < 1e-10, (name, key, mean, value)
        for rank, rows in enumerate(ROWS):
            for got, want in zip(ranks[rank][name][1], grads):
                torch.testing.assert_close(got, WORLD * want[rows], rtol=1e-9, atol=1e-12)
    for rank, rows in enumerate(ROWS):  # without cross-device negatives each rank sees only its own batch
        values, _ = run_case("local_only", x, rows)
        assert abs(ranks[rank]["local_only"][0]["loss"] - values["loss"]) < 1e-10
    enc = encoder()
    encoded_loss(enc, x, everything).backward()
    for rank in range(WORLD):
        for got, prm in zip(ranks[rank]["ddp"], enc.parameters()):
            torch.testing.assert_close(got, prm.grad, rtol=1e-9, atol=1e-12)
