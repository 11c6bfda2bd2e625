"""The interaction graph between consecutive node layers: edges (gradient × activation) in the LIB and the PCA
basis, their sparsity figures and the node-ablation curve.

Symbols: N samples; k_l the number of directions kept at node layer l.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from lightning_probes.measures.interaction_basis.bases import (
    Basis,
    FinalBasis,
    InteractionBasis,
    _backward_pass,
)
from lightning_probes.measures.interaction_basis.jacobians import (
    Gradients,
    Section,
    _check_finite,
    _folded,
    augment,
    lib_jacobians,
)

_F64 = torch.float64


@dataclass(frozen=True)
class InteractionGraph:
    """Bases of node layers 0..L and the edge matrices between consecutive layers.

    Attributes:
        bases: the LIB and PCA bases.
        lib_edges: L tensors (k_{l+1}, k_l), edges in the LIB basis.
        pca_edges: L tensors, edges in the PCA basis; the output node has the same basis as in the LIB graph
            (the ``final_basis``), so both graphs end at the same output coordinates.
    """

    bases: InteractionBasis
    lib_edges: list[Tensor]
    pca_edges: list[Tensor]

    @property
    def pca_graph_bases(self) -> list[Basis]:
        """The bases of the PCA graph's nodes: PCA at layers 0..L-1, the final basis at the output."""
        return [*self.bases.pca[:-1], self.bases.lib[-1]]


def interaction_graph(
    sections: Sequence[Section],
    activations: Sequence[Tensor],
    truncation: float = 1e-6,
    final_basis: FinalBasis = "logits",
    max_jacobian_elements: int = 2**24,
    check: bool = True,
    *,
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> InteractionGraph:
    """LIB and PCA bases plus both edge graphs in one call (arguments as :func:`interaction_basis`).

    Equal to :func:`interaction_basis` followed by :func:`interaction_edges` on ``.lib`` and on
    :attr:`InteractionGraph.pca_graph_bases` (tested), but the LIB edges reuse the Jacobians of the M' pass when
    they fit in ``max_jacobian_elements``. ``gradients`` applies to M' and to both graphs' edges.

    Raises:
        ValueError: as :func:`interaction_basis`.

    Example:
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = [nn.Sequential(nn.Linear(3, 4), nn.Tanh()).double(), nn.Linear(4, 2).double()]
        >>> acts = [torch.randn(50, 3, dtype=torch.float64)]
        >>> with torch.no_grad():
        ...     acts += [net[0](acts[0])]; acts += [net[1](acts[1])]
        >>> graph = interaction_graph(net, acts)
        >>> [tuple(e.shape) for e in graph.lib_edges], [tuple(e.shape) for e in graph.pca_edges]
        ([(3, 4), (2, 3)], [(5, 4), (2, 5)])
    """
    bases, jacobians = _backward_pass(sections, activations, truncation, final_basis, max_jacobian_elements, check,
                                      True, gradients, integration_points)
    lib_edges = []
    for layer, section in enumerate(sections):
        chunks = jacobians[layer] or lib_jacobians(section, activations[layer], bases.lib[layer + 1].C,
                                                   max_jacobian_elements, gradients=gradients,
                                                   integration_points=integration_points)
        lib_edges.append(_edges_from_jacobians(chunks, activations[layer], bases.lib[layer],
                                               bases.lib[layer + 1].n_directions))
        jacobians[layer] = []  # this layer's Jacobians are no longer needed
    graph = InteractionGraph(bases=bases, lib_edges=lib_edges, pca_edges=[])
    graph.pca_edges.extend(interaction_edges(sections, activations, graph.pca_graph_bases, max_jacobian_elements,
                                             gradients=gradients, integration_points=integration_points))
    return graph


def edge_matrix(
    section: Section,
    activations: Tensor,
    basis: Basis,
    next_basis: Basis,
    max_jacobian_elements: int = 2**24,
    *,
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> Tensor:
    """E_ij = E_x[(∂f̂^{l+1}_i/∂f̂^l_j · f̂^l_j)²] between one node layer and the next, (k_{l+1}, k_l) float64.

    ∂f̂^{l+1}/∂f̂^l = J C_invᵀ with J from :func:`lib_jacobians` (the chain rule through f = C_invᵀ f̂; equal to
    differentiating f̂^{l+1} as a function of f̂^l directly — tested). With ``gradients="integrated"`` J is the
    path average J̄, so E_ij = E_x[((J̄ C_invᵀ)_ij f̂_j)²]: the integral inside the square.

    Raises:
        ValueError: as :func:`lib_jacobians`.

    Example:
        >>> from torch import nn
        >>> lin = nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.fill_(3.0)
        >>> I = torch.eye(2, dtype=torch.float64)
        >>> b = Basis(C=I, C_inv=I, eigenvalues=torch.ones(2, dtype=torch.float64), spectrum=torch.ones(1))
        >>> edge_matrix(lin, torch.tensor([[1.0], [2.0]], dtype=torch.float64), b, b).tolist()  # (3·a)² averaged
        [[1.0, 0.0], [0.0, 22.5]]
    """
    chunks = lib_jacobians(section, activations, next_basis.C, max_jacobian_elements, gradients=gradients,
                           integration_points=integration_points)
    return _edges_from_jacobians(chunks, activations, basis, next_basis.n_directions)


def _edges_from_jacobians(chunks: Iterable[Tensor], activations: Tensor, basis: Basis, n_next: int) -> Tensor:
    """E (n_next, k) from Jacobian chunks (B, n_next, p+1) of the next layer's features, in sample order."""
    C = basis.C.to(device=activations.device, dtype=_F64)  # (p+1, k)
    C_inv = basis.C_inv.to(device=activations.device, dtype=_F64)  # (k, p+1)
    f_hat = augment(activations).to(_F64) @ C  # (N, k)
    E = torch.zeros(n_next, basis.n_directions, dtype=_F64, device=activations.device)
    start = 0
    for J in chunks:
        J_hat = J.to(_F64) @ C_inv.T  # (B, k', k) = ∂f̂^{l+1}/∂f̂^l
        J_hat.mul_(f_hat[start : start + len(J), None, :]).square_()  # in place: one float64 chunk alive
        E += J_hat.sum(0)
        start += len(J)
        del J_hat
    return E / len(activations)


def interaction_edges(
    sections: Sequence[Section],
    activations: Sequence[Tensor],
    bases: Sequence[Basis],
    max_jacobian_elements: int = 2**24,
    *,
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> list[Tensor]:
    """Edge matrices between consecutive node layers: L tensors (k_{l+1}, k_l), in the given bases.

    Pass ``InteractionBasis.lib`` for LIB edges, or :attr:`InteractionGraph.pca_graph_bases` (PCA, ending at the
    same output basis) for the PCA baseline.

    Raises:
        ValueError: the numbers of sections, activations and bases do not agree, or as :func:`edge_matrix`.
    """
    if len(bases) != len(activations) or len(sections) + 1 != len(activations):
        raise ValueError(
            f"need L sections, L+1 activations and L+1 bases; got {len(sections)}, {len(activations)}, {len(bases)}."
        )
    return [
        edge_matrix(sections[layer], activations[layer], bases[layer], bases[layer + 1], max_jacobian_elements,
                    gradients=gradients, integration_points=integration_points)
        for layer in range(len(sections))
    ]


def data_edges(edges: Tensor, basis: Basis, next_basis: Basis) -> Tensor:
    """The edges between data directions only: (k_{l+1} − c', k_l − c), the constant directions' row/column removed.

    Sparsity figures (:func:`edges_for_mass`) are counted on this block: the constant→constant edge alone can
    hold almost all of the edge mass (the biases at initialisation), which says nothing about the data directions.

    Example:
        >>> I = torch.eye(2, dtype=torch.float64)
        >>> b = Basis(C=I, C_inv=I, eigenvalues=torch.ones(2), spectrum=torch.ones(1), constant=True)
        >>> data_edges(torch.tensor([[9.0, 1.0], [2.0, 3.0]]), b, b).tolist()
        [[3.0]]
    """
    return edges[int(next_basis.constant):, int(basis.constant):]


def constant_edge_share(edges: Tensor, basis: Basis, next_basis: Basis) -> float:
    """Share of the edge mass on edges to or from a constant direction, in [0, 1] (0 if there is no mass).

    Example:
        >>> I = torch.eye(2, dtype=torch.float64)
        >>> b = Basis(C=I, C_inv=I, eigenvalues=torch.ones(2), spectrum=torch.ones(1), constant=True)
        >>> constant_edge_share(torch.tensor([[9.0, 1.0], [2.0, 3.0]]), b, b)
        0.8
    """
    total = float(edges.to(_F64).sum())
    if total <= 0:
        return 0.0
    return (total - float(data_edges(edges, basis, next_basis).to(_F64).sum())) / total


def edges_for_mass(edges: Tensor, fraction: float) -> int:
    """Fewest edges whose summed weight reaches ``fraction`` of the total edge mass (0 if there is no mass).

    Raises:
        ValueError: fraction outside (0, 1], or edges that are not finite and non-negative.

    Example:
        >>> edges_for_mass(torch.tensor([[5.0, 3.0], [1.0, 1.0]]), 0.9)
        3
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
    if not bool(torch.isfinite(edges).all()) or bool((edges < 0).any()):
        raise ValueError("edges must be finite and non-negative (squared attributions); got NaN, Inf or negative "
                         "values.")
    values = edges.reshape(-1).to(_F64).sort(descending=True).values  # (E,)
    total = values.sum()
    if total <= 0:
        return 0
    cumulative = values.cumsum(0)
    index = int(torch.searchsorted(cumulative, fraction * total))  # first position with cumsum ≥ target
    return min(index + 1, len(values))


def ablation_curve(
    sections: Sequence[Section],
    activations: Tensor,
    basis: Basis,
    targets: Tensor,
    ks: Sequence[int] | None = None,
    max_elements: int = 2**24,
) -> Tensor:
    """Accuracy when node layer l keeps only its top-k basis directions (node ablation), for each k.

    The activations are projected to f_k = C_inv[:k]ᵀ C[:, :k]ᵀ f and run through the remaining bias-folded
    sections (the constant coordinate of f_k scales the downstream biases, as in the folded network); accuracy
    is argmax of the output against ``targets``.

    Args:
        sections: the sections from node l to the output (``sections[l:]`` of the full list).
        activations: (N, *shape) node-l activations.
        basis: node l's basis (LIB or PCA), directions in order of importance.
        targets: (N,) class indices.
        ks: numbers of directions to keep (default 1..k).
        max_elements: bound on the projected activations run through the chain at once (several k per pass).

    Returns:
        (len(ks),) accuracies in [0, 1], float64.

    Raises:
        ValueError: targets that are not 1-D class indices of the output's classes, or not one per sample; activations
            with NaN or Inf; ks outside [0, k].
    """
    if len(targets) != len(activations):
        raise ValueError(f"got {len(activations)} activations but {len(targets)} targets.")
    if targets.ndim != 1 or targets.is_floating_point():
        raise ValueError(f"targets must be 1-D class indices, got dtype {targets.dtype} and shape "
                         f"{tuple(targets.shape)}.")
    _check_finite(activations, "activations")
    ks = list(range(1, basis.n_directions + 1)) if ks is None else list(ks)
    if any(k < 0 or k > basis.n_directions for k in ks):
        raise ValueError(f"ks must lie in [0, {basis.n_directions}], got {ks}.")
    f = augment(activations)  # (N, p+1)
    C = basis.C.to(device=f.device, dtype=f.dtype)
    C_inv = basis.C_inv.to(device=f.device, dtype=f.dtype)
    f_hat = f @ C  # (N, k)
    shapes = [activations.shape[1:]]
    with torch.no_grad():
        x = activations
        for section in sections:  # output shapes of each section, for the folded functions
            x = section(x)
            shapes.append(x.shape[1:])
    classes = shapes[-1].numel()
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ValueError(f"targets must lie in 0..{classes - 1} (the output has {classes} classes), got "
                         f"{int(targets.min())}..{int(targets.max())}.")
    chain = [vmap(_folded(s, shape)) for s, shape in zip(sections, shapes)]
    n, width = f.shape
    per_pass = max(1, max_elements // (n * width))  # how many k share one batched run of the chain
    y = targets.to(f.device)
    accuracies = []
    with torch.no_grad():
        for start in range(0, len(ks), per_pass):
            batch = ks[start : start + per_pass]
            h = torch.stack([f_hat[:, :k] @ C_inv[:k] for k in batch]).reshape(-1, width)  # (K' N, p+1)
            for run in chain:
                h = run(h)
            predicted = h[:, 1:].argmax(-1).reshape(len(batch), n)  # (K', N)
            accuracies.append((predicted == y).to(_F64).mean(1))
    return torch.cat(accuracies) if accuracies else torch.zeros(0, dtype=_F64)
