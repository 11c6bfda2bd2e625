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

3. before / after issue 20 on the digits MLP 64-256-256-10 (at initialisation and trained) and on a
   modular-addition MLP (one-hot (a, b) mod 23, 46-128-128-23, trained for a few seconds): the first version
   (all of M diagonalised so the constant mixes into the data directions, PCA of the logits at the output,
   counts over every edge) against the paper's recipe as now (constant direction apart, raw logits, counts over
   the data directions, the constant's edge share apart): directions kept, edges_90 / edges_99, Λ;
4. plain vs integrated gradients (Gauss–Legendre, 16 points) on the digits MLP with ReLU (equal: the path
   α·f keeps a bias-folded ReLU net homogeneous) and with GELU (different): counts, Λ, the largest principal
   angle between the LIB spans, and the cost of each (closed-form route and autograd route);
5. peak memory a probe adds (VmHWM in a fresh process), ``--memory`` runs only that.

Timings are medians of a few repeats measured in this run; nothing is compared with stored numbers.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

import torch
from _timing import median_seconds
from torch import nn

from lightning_probes.measures.interaction_basis import (
    _backward_pass,
    augment,
    edges_for_mass,
    interaction_edges,
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
        import tempfile

        from lightning.pytorch.loggers import TensorBoardLogger

        with tempfile.TemporaryDirectory() as logdir:
            trainer = pl.Trainer(max_steps=2, callbacks=[monitor], **{**quiet, "logger": TensorBoardLogger(logdir)})
            trainer.fit(model, data)
        per_probe = monitor.clock.probe_seconds / monitor.clock.n_probes
        last = monitor.history[-1][1]
        print(f"  {label:<26} {per_probe:.2f} s per probe (target < 5 s); LIB/PCA directions "
              f"{[int(last[f'{i}/n_directions']) for i in monitor.layers]} / "
              f"{[int(last[f'{i}/n_directions_pca']) for i in monitor.layers]}")


# ---------------------------------------------------------------- before / after issue 20


def _digits_net(activation: str = "relu", steps: int = 300, n: int = 512) -> tuple[list[nn.Module], torch.Tensor]:
    """The digits MLP 64-256-256-10 trained by plain SGD for ``steps`` full-batch-of-128 steps; its sections and
    N probe inputs."""
    from lightning_probes.datasets import load_digits_tensors
    from lightning_probes.models import MLPClassifier

    torch.manual_seed(0)
    model = MLPClassifier(in_features=64, hidden=(256, 256), num_classes=10, activation=activation)
    x, y = load_digits_tensors()
    x = x.float()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        batch = torch.randint(0, len(x), (128,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    f = model.features
    return [f[0:2], f[2:4], model.classifier], x[:n]


def _modular_net(p: int = 23, seconds: float = 4.0) -> tuple[list[nn.Module], torch.Tensor, float]:
    """One-hot (a, b) -> (a + b) mod p, a 2p-128-128-p ReLU MLP trained with AdamW on all p² pairs for a few
    seconds; its sections, the p² inputs and the final accuracy."""
    torch.manual_seed(0)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.cat([nn.functional.one_hot(a, p), nn.functional.one_hot(b, p)], dim=1).float()  # (p², 2p)
    y = (a + b) % p
    sections = [nn.Sequential(nn.Linear(2 * p, 128), nn.ReLU()), nn.Sequential(nn.Linear(128, 128), nn.ReLU()),
                nn.Linear(128, p)]
    model = nn.Sequential(*sections)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    return sections, x, accuracy


def _activations(sections: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    acts = [x]
    with torch.no_grad():
        for s in sections:
            acts.append(s(acts[-1]))
    return acts


def _before(sections, acts) -> dict[str, list]:
    """The first version: all of M diagonalised, PCA of the logits at the output, counts over every edge (the
    constant direction included)."""
    bases, _ = _backward_pass(sections, acts, 1e-6, "pca", 2**24, True, False, mix_constant=True)
    lib, pca = interaction_edges(sections, acts, bases.lib), interaction_edges(sections, acts, bases.pca)
    return {
        "dirs": [b.n_directions for b in bases.lib[:-1]], "dirs_pca": [b.n_directions for b in bases.pca[:-1]],
        "e90": [edges_for_mass(e, 0.9) for e in lib], "e99": [edges_for_mass(e, 0.99) for e in lib],
        "e90_pca": [edges_for_mass(e, 0.9) for e in pca], "e99_pca": [edges_for_mass(e, 0.99) for e in pca],
        "lambda": [b.eigenvalues for b in bases.lib[:-1]],
    }


def _after(sections, acts, **options) -> dict[str, list]:
    from lightning_probes.monitors.interaction_basis import layer_scalars

    graph = interaction_graph(sections, acts, **options)
    names = [str(i) for i in range(len(sections))]
    s = layer_scalars(graph, names)
    pick = lambda key: [s[f"{n}/{key}"] for n in names]  # noqa: E731
    return {
        "dirs": [int(v) for v in pick("n_directions")], "dirs_pca": [int(v) for v in pick("n_directions_pca")],
        "e90": [int(v) for v in pick("edges_90")], "e99": [int(v) for v in pick("edges_99")],
        "e90_pca": [int(v) for v in pick("edges_90_pca")], "e99_pca": [int(v) for v in pick("edges_99_pca")],
        "share": pick("constant_edge_share"), "share_pca": pick("constant_edge_share_pca"),
        "lambda0": pick("constant_lambda"), "lambda": [b.eigenvalues[1:] if b.constant else b.eigenvalues
                                                        for b in graph.bases.lib[:-1]],
        "graph": graph,
    }


def bench_before_after(label: str, sections: list[nn.Module], x: torch.Tensor) -> None:
    acts = _activations(sections, x)
    old, new = _before(sections, acts), _after(sections, acts)
    print(f"{label} (N={len(x)}): before (all of M, PCA output, constant counted) -> after (constant apart, raw "
          "logits, data directions counted)")
    for i in range(len(sections)):
        lam_old, lam_new = old["lambda"][i], new["lambda"][i]
        top = min(5, len(lam_old), len(lam_new))
        print(f"  node {i}: LIB dirs {old['dirs'][i]} -> {new['dirs'][i]} (+ constant) | PCA dirs "
              f"{old['dirs_pca'][i]} -> {new['dirs_pca'][i]} | edges_90 LIB {old['e90'][i]} -> {new['e90'][i]}, "
              f"PCA {old['e90_pca'][i]} -> {new['e90_pca'][i]} | edges_99 LIB {old['e99'][i]} -> {new['e99'][i]}, "
              f"PCA {old['e99_pca'][i]} -> {new['e99_pca'][i]}")
        print(f"          constant's edge share LIB {new['share'][i]:.1%}, PCA {new['share_pca'][i]:.1%}; "
              f"Λ₀ = {new['lambda0'][i]:.4g}; top Λ before {_fmt(lam_old[:top])} after {_fmt(lam_new[:top])}")


def _fmt(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(v):.3g}" for v in values) + "]"


def _largest_angle_degrees(C1: torch.Tensor, C2: torch.Tensor, k: int) -> float:
    """Largest principal angle between the spans of the top-k data directions of two LIB bases."""
    q1, _ = torch.linalg.qr(C1[1:, 1 : k + 1])
    q2, _ = torch.linalg.qr(C2[1:, 1 : k + 1])
    cosines = torch.linalg.svdvals(q1.T @ q2).clamp(max=1.0)
    return math.degrees(math.acos(float(cosines.min())))


def bench_integrated(label: str, sections: list[nn.Module], x: torch.Tensor, points: int = 16) -> None:
    acts = _activations(sections, x)
    plain, integrated = _after(sections, acts), _after(sections, acts, gradients="integrated",
                                                      integration_points=points)
    t_plain = median_seconds(lambda: interaction_graph(sections, acts), 3)
    t_int = median_seconds(lambda: interaction_graph(sections, acts, gradients="integrated",
                                                     integration_points=points), 3)
    print(f"{label}: plain vs integrated ({points} Gauss–Legendre points), N={len(x)}; one probe "
          f"{t_plain * 1e3:.0f} ms vs {t_int * 1e3:.0f} ms ({t_int / t_plain:.2f}x)")
    for i in range(len(sections)):
        lp, li = plain["lambda"][i], integrated["lambda"][i]
        top = min(len(lp), len(li))
        change = float(((li[:top] - lp[:top]).abs() / lp[:top]).max()) if top else 0.0
        k = min(10, plain["dirs"][i], integrated["dirs"][i])
        angle = _largest_angle_degrees(plain["graph"].bases.lib[i].C, integrated["graph"].bases.lib[i].C, k)
        print(f"  node {i}: LIB dirs {plain['dirs'][i]} vs {integrated['dirs'][i]} | edges_90 {plain['e90'][i]} vs "
              f"{integrated['e90'][i]} | Λ max rel. change {change:.2e} | largest angle, top-{k} spans "
              f"{angle:.2f}°")


def bench_output_basis(label: str, sections: list[nn.Module], x: torch.Tensor) -> None:
    """What the output basis changes upstream: raw logits (the paper's) vs their PCA (centred, with the constant)."""
    acts = _activations(sections, x)
    raw, pca = _after(sections, acts), _after(sections, acts, final_basis="pca")
    print(f"{label}: output basis raw logits vs PCA of the logits, N={len(x)}")
    for i in range(len(sections) - 1):  # the hidden node layers (the last one's edges end in different bases)
        k = min(10, raw["dirs"][i], pca["dirs"][i])
        angle = _largest_angle_degrees(raw["graph"].bases.lib[i].C, pca["graph"].bases.lib[i].C, k)
        print(f"  node {i}: LIB dirs {raw['dirs'][i]} vs {pca['dirs'][i]} | edges_90 {raw['e90'][i]} vs "
              f"{pca['e90'][i]} | Λ₀ {raw['lambda0'][i]:.3g} vs {pca['lambda0'][i]:.3g} | largest angle, top-{k} "
              f"spans {angle:.2f}°")


def bench_integrated_autograd_cost(n: int = 512, width: int = 100, points: int = 16) -> None:
    """The autograd route (any section that is not Linear + elementwise): integrated costs ~points× plain."""
    torch.manual_seed(0)
    section = nn.Sequential(nn.Linear(width, width), nn.GELU())
    x = torch.randn(n, width)
    C = torch.randn(width + 1, width + 1) / width**0.5
    plain = median_seconds(lambda: list(lib_jacobians(section, x, C, mode="rev")), 3)
    integrated = median_seconds(lambda: list(lib_jacobians(section, x, C, mode="rev", gradients="integrated",
                                                           integration_points=points)), 3)
    dense_p = median_seconds(lambda: list(lib_jacobians(section, x, C)), 3)
    dense_i = median_seconds(lambda: list(lib_jacobians(section, x, C, gradients="integrated",
                                                        integration_points=points)), 3)
    print(f"Jacobians N={n}, {width}->{width} Linear+GELU, {points} points: autograd route plain "
          f"{plain * 1e3:.0f} ms, integrated {integrated * 1e3:.0f} ms ({integrated / plain:.1f}x); closed form plain "
          f"{dense_p * 1e3:.0f} ms, integrated {dense_i * 1e3:.0f} ms ({dense_i / dense_p:.2f}x)")


# ---------------------------------------------------------------- memory


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def memory_probe() -> None:
    """In this (fresh) process: peak RSS that one LIB probe of the digits MLP (N=256, as the overhead grid's row)
    adds on top of the net, its activations and a warm-up of torch."""
    sections, x = _digits_net(steps=0, n=256)
    acts = _activations(sections, x)
    tiny = [nn.Sequential(nn.Linear(4, 3), nn.ReLU())]
    interaction_graph(tiny, _activations(tiny, torch.randn(8, 4)))  # warm the code paths (and lazy imports)
    before = _peak_rss_kib()
    start = time.perf_counter()
    interaction_graph(sections, acts)
    seconds = time.perf_counter() - start
    print(f"MEMORY {(_peak_rss_kib() - before) / 1024:.1f} MiB {seconds:.3f} s")


def bench_memory() -> None:
    out = subprocess.run([sys.executable, __file__, "--memory"], capture_output=True, text=True, check=True).stdout
    mib, seconds = out.split()[1], out.split()[3]
    print(f"Peak memory one LIB probe of the digits MLP 64-256-256-10 adds (N=256, fresh process, VmHWM): {mib} MiB "
          f"(target <= 150 MiB) in {float(seconds):.2f} s")


if __name__ == "__main__":
    if "--memory" in sys.argv:
        memory_probe()
        sys.exit()
    for n, width in [(16, 200), (64, 100), (512, 100), (512, 30)]:
        bench_jacobians(n, width, width)
    bench_digits_probe()
    bench_monitor_probe()
    bench_before_after("digits MLP 64-256-256-10 at initialisation", *_digits_net(steps=0))
    bench_before_after("digits MLP 64-256-256-10 after 300 SGD steps", *_digits_net(steps=300))
    sections, x, accuracy = _modular_net()
    bench_before_after(f"modular addition mod 23, 46-128-128-23 ReLU (accuracy {accuracy:.0%})", sections, x)
    bench_output_basis("digits MLP 64-256-256-10 after 300 SGD steps", *_digits_net(steps=300))
    bench_integrated("digits MLP ReLU after 300 steps", *_digits_net(steps=300))
    bench_integrated("digits MLP GELU after 300 steps", *_digits_net(activation="gelu", steps=300))
    bench_integrated("modular addition mod 23 ReLU", sections, x)
    bench_integrated_autograd_cost()
    bench_memory()
