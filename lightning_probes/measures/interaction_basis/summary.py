"""The figures of an interaction graph, per layer (:func:`layer_figures`): what the LIB monitor logs.

Sparsity is counted over the data directions only (:func:`~.graph.data_edges`); the edges to or from a constant
(bias) direction are reported apart as a share of the edge mass, with the constant direction's eigenvalue Λ₀.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lightning_probes.measures.interaction_basis.graph import (
    InteractionGraph,
    constant_edge_share,
    data_edges,
    edges_for_mass,
)

__all__ = ["LayerFigures", "layer_figures"]


@dataclass(frozen=True)
class LayerFigures:
    """The figures of one node layer l of an interaction graph, in the LIB basis and (``*_pca``) the PCA basis.

    Attributes:
        n_directions: data directions kept at layer l (the constant direction not counted).
        n_directions_pca: the same in the PCA basis.
        edges_90: fewest edges from layer l to l+1 carrying 90% of the data edges' mass.
        edges_99: the same at 99%.
        edges_90_pca: ``edges_90`` in the PCA graph.
        edges_99_pca: ``edges_99`` in the PCA graph.
        constant_edge_share: share of all edge mass on edges to or from a constant direction, in [0, 1].
        constant_edge_share_pca: the same in the PCA graph.
        constant_lambda: Λ₀, the constant direction's LIB eigenvalue (0.0 where the layer has none).
    """

    n_directions: int
    n_directions_pca: int
    edges_90: int
    edges_99: int
    edges_90_pca: int
    edges_99_pca: int
    constant_edge_share: float
    constant_edge_share_pca: float
    constant_lambda: float

    def as_scalars(self) -> dict[str, float]:
        """The figures as a flat ``{name: float}`` dict (the names of the fields)."""
        return {key: float(value) for key, value in asdict(self).items()}


def layer_figures(graph: InteractionGraph) -> list[LayerFigures]:
    """The figures of node layers 0..L-1 of ``graph`` (one per section, from layer l to l+1).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_probes.measures.interaction_basis import interaction_graph
        >>> _ = torch.manual_seed(0)
        >>> net = [nn.Sequential(nn.Linear(3, 4), nn.Tanh()).double(), nn.Linear(4, 2).double()]
        >>> acts = [torch.randn(50, 3, dtype=torch.float64)]
        >>> with torch.no_grad():
        ...     acts += [net[0](acts[0])]; acts += [net[1](acts[1])]
        >>> figures = layer_figures(interaction_graph(net, acts))
        >>> len(figures), figures[0].n_directions, figures[0].n_directions_pca
        (2, 3, 3)
        >>> all(f.edges_90 <= f.edges_99 and 0.0 <= f.constant_edge_share <= 1.0 for f in figures)
        True
    """
    lib, pca = graph.bases.lib, graph.pca_graph_bases
    figures = []
    for layer, (lib_edges, pca_edges) in enumerate(zip(graph.lib_edges, graph.pca_edges)):
        lib_data = data_edges(lib_edges, lib[layer], lib[layer + 1])
        pca_data = data_edges(pca_edges, pca[layer], pca[layer + 1])
        lam0 = lib[layer].constant_eigenvalue
        figures.append(LayerFigures(
            n_directions=int(lib[layer].n_data_directions),
            n_directions_pca=int(pca[layer].n_data_directions),
            edges_90=edges_for_mass(lib_data, 0.90),
            edges_99=edges_for_mass(lib_data, 0.99),
            edges_90_pca=edges_for_mass(pca_data, 0.90),
            edges_99_pca=edges_for_mass(pca_data, 0.99),
            constant_edge_share=constant_edge_share(lib_edges, lib[layer], lib[layer + 1]),
            constant_edge_share_pca=constant_edge_share(pca_edges, pca[layer], pca[layer + 1]),
            constant_lambda=0.0 if lam0 is None else float(lam0),
        ))
    return figures
