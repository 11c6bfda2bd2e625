"""Formula search for Clustered Compositional Explanations: exact branch-and-bound vs exhaustive vs beam.

Problem size of the issue: 30 atomic concepts x 10 000 mask positions, formulas of length <= 3 (each unit
mask is a random length-3 formula of the concepts with a random share of flipped positions, so the optimum
is a real search). Baselines measured in the same run:
  * exhaustive — every formula scored, batched (all prefixes x all atoms by matrix products);
  * direct     — every formula's mask built and scored one at a time (the definition), on one unit;
  * beam       — the paper's beam search (width 5, first beam = 10 best atoms).
Also exact 1-D k-means (activation ranges) against scikit-learn's Lloyd k-means.

Run: python benchmarks/explanations.py [--units 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from lightning_probes.measures.explanations import (
    Atom,
    Compound,
    Op,
    best_formula,
    exhaustive_search,
    kmeans_1d,
    prepare_concepts,
)

OPS = (Op.AND, Op.OR, Op.AND_NOT)


def problem(gen: torch.Generator, k: int = 30, positions: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    density = 0.05 + 0.45 * torch.rand(k, generator=gen)
    concepts = torch.rand(positions, k, generator=gen) < density  # (P, K) per-"sample" concepts
    a, b, c = torch.randperm(k, generator=gen)[:3].tolist()
    op1, op2 = (OPS[i] for i in torch.randint(0, 3, (2,), generator=gen).tolist())
    target = Compound(op2, Compound(op1, Atom(a), Atom(b)), Atom(c)).evaluate(concepts.T)
    flip = torch.rand(positions, generator=gen) < 0.05 + 0.3 * torch.rand(1, generator=gen)
    return concepts, target ^ flip


def direct_search(concepts: torch.Tensor, unit: torch.Tensor) -> float:
    per_concept = concepts.T.contiguous()  # (K, P)
    m = int(unit.sum())
    best = 0.0
    k = per_concept.shape[0]

    def score(f) -> float:
        mask = f.evaluate(per_concept)
        inter = int((mask & unit).sum())
        union = m + int(mask.sum()) - inter
        return inter / union if union else 0.0

    formulas = itertools.chain(
        (Atom(a) for a in range(k)),
        (Compound(op, Atom(a), Atom(b)) for a, b in itertools.permutations(range(k), 2) for op in OPS),
        (Compound(o2, Compound(o1, Atom(a), Atom(b)), Atom(c))
         for a, b, c in itertools.permutations(range(k), 3) for o1 in OPS for o2 in OPS),
    )
    for f in formulas:
        best = max(best, score(f))
    return best


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--direct-units", type=int, default=1, help="units also searched by direct enumeration")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared: one thread gives stable timings
    gen = torch.Generator().manual_seed(args.seed)
    t_exact = t_full = t_beam = t_direct = t_exact_direct = 0.0
    misses, gaps, evaluated, evaluated_full = 0, [], 0, 0
    for unit_index in range(args.units):
        concepts, unit = problem(gen)
        table = prepare_concepts(concepts)
        exact, dt = timed(lambda: best_formula(table, unit))
        t_exact += dt
        full, dt = timed(lambda: exhaustive_search(table, unit))
        t_full += dt
        beam, dt = timed(lambda: best_formula(table, unit, method="beam"))
        t_beam += dt
        assert exact.iou == full.iou, "exact search disagrees with exhaustive enumeration"
        assert beam.iou <= exact.iou
        misses += beam.iou < exact.iou
        gaps.append(exact.iou - beam.iou)
        evaluated += exact.num_evaluated
        evaluated_full += full.num_evaluated
        if unit_index < args.direct_units:
            best, dt = timed(lambda: direct_search(concepts, unit))
            assert best == exact.iou, "exact search disagrees with direct enumeration"
            t_direct += dt
            t_exact_direct += (lambda r: r)(timed(lambda: best_formula(table, unit))[1])
    n = args.units
    print(f"formula search, 30 concepts x 10 000 positions, length <= 3, {n} units (seed {args.seed})")
    print(f"  exact (branch and bound): {1e3 * t_exact / n:8.1f} ms/unit, {evaluated / n:9.0f} formulas scored")
    print(f"  exhaustive (batched):     {1e3 * t_full / n:8.1f} ms/unit, {evaluated_full / n:9.0f} formulas scored"
          f"  -> exact is {t_full / t_exact:.1f}x faster")
    if args.direct_units:
        print(f"  direct enumeration:       {1e3 * t_direct / args.direct_units:8.1f} ms/unit"
              f"  -> exact is {t_direct / t_exact_direct:.0f}x faster ({args.direct_units} unit)")
    print(f"  beam (width 5, first 10): {1e3 * t_beam / n:8.1f} ms/unit  -> exact/beam time {t_exact / t_beam:.2f}")
    print(f"  beam misses the optimum on {misses}/{n} units ({100 * misses / n:.0f}%), "
          f"mean IoU gap {sum(gaps) / n:.4f}, max {max(gaps):.4f}")

    from sklearn.cluster import KMeans

    values = torch.relu(torch.randn(256 * 16 * 16, generator=gen, dtype=torch.float64)) ** 2  # one conv unit
    distinct, counts = torch.unique(values[values > 0], return_counts=True)
    _, t_dp = timed(lambda: kmeans_1d(distinct, 5, counts))
    lloyd, t_lloyd = timed(lambda: KMeans(5, n_init=1, random_state=0).fit(values[values > 0].numpy()[:, None]))
    print(f"activation ranges, {distinct.numel()} values, K = 5: exact DP k-means {1e3 * t_dp:.0f} ms, "
          f"scikit-learn Lloyd (1 init) {1e3 * t_lloyd:.0f} ms -> ratio {t_lloyd / t_dp:.1f}")


if __name__ == "__main__":
    main()
