"""Local Interaction Basis benchmarks: batched Jacobians and one full probe of the digits MLP.

Run: ``python benchmarks/interaction_basis.py``. Prints

1. the Jacobians ``lib_jacobians`` computes — the closed form it takes for dense (Linear + elementwise
   activation) sections, and batched ``torch.func`` (vmap over samples of jacrev), the route of any other
   section — vs the usual loop over output dimensions (one backward pass per output, batched over samples by
   summing — what the reference code does): same numbers, ratio of times (target ≥ 5×), on a few sizes;
2. the wall time of one complete LIB probe (bases, LIB and PCA edges) of the digits MLP 64→100→100→10 on
   512 samples with 3 node layers + the output (target < 5 s on this CPU): the measure alone on an untrained
   net, then one probe of InteractionBasisMonitor inside ``Trainer.fit`` on a trained net (scalars only, with
   pictures, with pictures and the ablation curve).

Timings are medians of a few repeats measured in this run; nothing is compared with stored numbers.
"""

from __future__ import annotations


import torch
from torch import nn

from _timing import median_seconds

from lightning_probes.measures.interaction_basis import (
    augment,
    edges_for_mass,
    interaction_graph,
    lib_jacobians,
)



def _loop_over_outputs(section: nn.Module, x: torch.Tensor, C_next: torch.Tensor) -> torch.Tensor:
    """Baseline: J[:, i, :] from one backward pass per output i (summed over samples), bias folded by hand."""
    f = augment(x).requires_grad_(True)  # (N, p+1)
    c, a = f[:, :1], f[:, 1:]
    linear, act = section[0], section[1]
    out = torch.cat([c, act(a @ linear.weight.T + c * linear.bias)], dim=1) @ C_next  # (N, k)
    rows = [torch.autograd.grad(out[:, i].sum(), f, retain_graph=True)[0] for i in range(out.shape[1])]
    return torch.stack(rows, dim=1)  # (N, k, p+1)


def bench_jacobians(n: int = 512, width: int = 100, out: int = 100) -> float:
    torch.manual_seed(0)
    section = nn.Sequential(nn.Linear(width, out), nn.ReLU())
    x = torch.randn(n, width)
    C_next = torch.randn(out + 1, out + 1) / out**0.5  # a next-layer basis keeping every direction
    closed = lambda: torch.cat(list(lib_jacobians(section, x, C_next)))  # noqa: E731  (auto: closed form)
    batched = lambda: torch.cat(list(lib_jacobians(section, x, C_next, mode="rev")))  # noqa: E731
    loop = lambda: _loop_over_outputs(section, x, C_next)  # noqa: E731
    torch.testing.assert_close(closed(), loop(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched(), loop(), rtol=1e-4, atol=1e-5)
    t_closed, t_batched, t_loop = median_seconds(closed, 5), median_seconds(batched, 5), median_seconds(loop, 5)
    print(f"Jacobians N={n}, {width}->{out} Linear+ReLU, k={out + 1} LIB outputs:")
    print(f"  loop over outputs {t_loop * 1e3:8.1f} ms | vmap(jacrev) {t_batched * 1e3:8.1f} ms "
          f"({t_loop / t_batched:5.1f}x) | closed form (default for dense sections) {t_closed * 1e3:8.1f} ms "
          f"({t_loop / t_closed:5.1f}x; target >= 5x)")
    return t_loop / t_closed


def bench_digits_probe(n: int = 512) -> float:
    from lightning_probes.datasets import load_digits_tensors
    from lightning_probes.models import MLPClassifier

    torch.manual_seed(0)
    model = MLPClassifier(in_features=64, hidden=(100, 100), num_classes=10).eval()
    x = load_digits_tensors()[0][:n].float()
    f = model.features
    sections = [f[0:2], f[2:4], model.classifier]  # node points: inputs of features.0, features.2, classifier
    with torch.no_grad():
        acts = [x]
        for s in sections:
            acts.append(s(acts[-1]))

    def probe():
        graph = interaction_graph(sections, acts)
        lib90 = [edges_for_mass(e, 0.9) for e in graph.lib_edges]
        return graph.bases, lib90, [edges_for_mass(e, 0.9) for e in graph.pca_edges]

    seconds = median_seconds(probe, 3)
    bases, lib90, pca90 = probe()
    print(f"One LIB probe of the digits MLP 64->100->100->10, N={n}, 3 node layers + output:")
    print(f"  {seconds:.2f} s (target < 5 s); directions LIB {[b.n_directions for b in bases.lib[:3]]} "
          f"vs PCA {[b.n_directions for b in bases.pca[:3]]}; edges_90 LIB {lib90} vs PCA {pca90} (untrained)")
    return seconds


def bench_monitor_probe(n: int = 512) -> None:
    import lightning.pytorch as pl

    from lightning_probes.datasets import DigitsDataModule
    from lightning_probes.models import MLPClassifier
    from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor

    quiet = dict(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                 enable_checkpointing=False, logger=False)
    pl.seed_everything(0)
    model, data = MLPClassifier(in_features=64, hidden=(100, 100), num_classes=10, lr=0.1), DigitsDataModule()
    pl.Trainer(max_steps=300, **quiet).fit(model, data)  # a trained net keeps more LIB directions: costlier
    print(f"One probe of InteractionBasisMonitor in Trainer.fit (digits MLP after 300 steps, N={n}, 3 layers):")
    for label, options in [("scalars only", dict(images_every=0)), ("with pictures", dict(images_every=1)),
                           ("with pictures + ablation", dict(images_every=1, ablation=True))]:
        monitor = InteractionBasisMonitor(layers=["features.0", "features.2", "classifier"], num_samples=n,
                                          schedule=10**9, **options)  # probes at step 0 and at the end only
        from lightning.pytorch.loggers import TensorBoardLogger
        import tempfile

        with tempfile.TemporaryDirectory() as logdir:
            trainer = pl.Trainer(max_steps=2, callbacks=[monitor], **{**quiet, "logger": TensorBoardLogger(logdir)})
            trainer.fit(model, data)
        per_probe = monitor.clock.probe_seconds / monitor.clock.n_probes
        last = monitor.history[-1][1]
        print(f"  {label:<26} {per_probe:.2f} s per probe (target < 5 s); LIB/PCA directions "
              f"{[int(last[f'{l}/n_directions']) for l in monitor.layers]} / "
              f"{[int(last[f'{l}/n_directions_pca']) for l in monitor.layers]}")


if __name__ == "__main__":
    for n, width in [(16, 200), (64, 100), (512, 100), (512, 30)]:
        bench_jacobians(n, width, width)
    bench_digits_probe()
    bench_monitor_probe()
