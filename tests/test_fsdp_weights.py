"""FSDP2 (``fully_shard``) under gloo with 2 CPU processes: the weight reads of condensation and LIB see the whole
parameters, never a shard, and give the single-process figures. (Lightning refuses strategy="fsdp" on CPU; see
README "Precision and strategies" and benchmarks/gpu_fsdp.py for the GPU check through the Trainer.)"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightning_probes.measures.condensation import condensation_stats
from lightning_probes.measures.interaction_basis import interaction_graph
from lightning_probes.weights import full_parameters, neuron_weights

pytestmark = [pytest.mark.ddp, pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")]


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.Tanh(), nn.Flatten(),  # 0-2: conv neurons (6, 27)
        nn.Sequential(nn.Linear(96, 10), nn.Tanh()),  # 3: a LIB section
        nn.Linear(10, 4),  # 4: the output section
    ).double()


def _figures(model: nn.Sequential, x: torch.Tensor) -> dict:
    """What condensation and LIB compute from the model's weights (inside full_parameters, as the monitors do)."""
    out = {}
    for name in ("0", "3.0", "4"):
        w, b = neuron_weights(model.get_submodule(name))
        out[f"weights/{name}"] = torch.cat([w, b[:, None]], 1)
        out[f"condensation/{name}"] = condensation_stats(w, b, None, threshold=0.9).scalars()
    with torch.no_grad():
        a0 = model[:3](x)
    with full_parameters(None, model), torch.no_grad():
        acts = [a0, model[3](a0)]
        acts.append(model[4](acts[1]))
        graph = interaction_graph([model[3], model[4]], acts)
        out["lib/edges"] = [e.clone() for e in graph.lib_edges]
        out["lib/n_directions"] = [b.n_directions for b in graph.bases.lib]
        still_whole = not any(type(p).__name__ == "DTensor" for p in model.parameters())
    out["whole_inside_block"] = still_whole
    return out


def _worker(rank: int, world: int, port: int, directory: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        model = _model()
        mesh = init_device_mesh("cpu", (world,))
        for name in ("0", "3", "4"):
            fully_shard(model.get_submodule(name), mesh=mesh)
        fully_shard(model, mesh=mesh)
        x = torch.randn(64, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        model(x[:2])  # FSDP2 initialises lazily, at the root's first forward
        local = model[0].weight.to_local().shape[0]  # this rank's shard of the 6 conv neurons
        figures = _figures(model, x)
        figures["local_rows"] = local
        figures["sharded_after"] = type(model[0].weight).__name__
        torch.save(figures, os.path.join(directory, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_full_weights_under_fully_shard_equal_one_process(tmp_path):
    x = torch.randn(64, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = _figures(_model(), x)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["local_rows"] == 3  # each rank holds half of the conv's rows: the model really is sharded
        assert got["sharded_after"] == "DTensor"  # and is sharded again after the reads
        assert got["whole_inside_block"]  # the section forwards inside the block did not reshard it
        for name in ("0", "3.0", "4"):
            torch.testing.assert_close(got[f"weights/{name}"], expected[f"weights/{name}"], rtol=0, atol=0)
            assert got[f"condensation/{name}"] == expected[f"condensation/{name}"]
        assert got["lib/n_directions"] == expected["lib/n_directions"]
        for e_got, e_exp in zip(got["lib/edges"], expected["lib/edges"]):
            torch.testing.assert_close(e_got, e_exp, rtol=1e-10, atol=1e-12)
