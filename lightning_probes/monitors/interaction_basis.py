"""InteractionBasisMonitor: the Local Interaction Basis of each layer and how sparse its interactions are.

Bushnaq et al. 2024, "The Local Interaction Basis" (arXiv 2405.10928); the bases and edges are computed in
:mod:`lightning_probes.measures.interaction_basis`, which also finds the sections of the model between the node
points (:func:`~lightning_probes.measures.interaction_basis.find_sections`). This file only collects the node
activations and publishes the figures.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_probes.measures.interaction_basis import (
    InteractionGraph,
    ablation_curve,
    find_sections,
    interaction_graph,
    layer_figures,
    path_quadrature,
)
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.probe_set import ProbeSet, capture, probing, resolve_module
from lightning_probes.tensorboard import drawing, heatmap_image, line_image, markdown_table
from lightning_probes.validation import check_choice, check_int, check_names, check_real
from lightning_probes.weights import check_strategy, full_parameters

__all__ = ["InteractionBasisMonitor"]

SectionSpec = nn.Module | str | Sequence[str]


class InteractionBasisMonitor(Monitor):
    """How many directions of each layer matter downstream (LIB) vs are merely present (PCA), and how sparse the
    interaction graph between adjacent layers is in each basis (SCIENCE.md section 4).

    The node points are the inputs of the named ``layers`` plus the model's output; the output keeps its raw
    logits (the paper's choice; or its PCA basis, or the identity plus the constant) and every named layer gets
    its LIB, computed from the output backwards on the probe set. The constant (bias) direction is its own LIB
    feature in every layer and is counted apart from the data directions.

    Logs under ``probes/lib/<layer>/``: ``n_directions`` (LIB data directions kept, the constant direction not
    counted), ``n_directions_pca`` (PCA data directions kept at the same threshold), ``edges_90`` / ``edges_99``
    (fewest edges between data directions of this layer and the next node holding 90% / 99% of the data-to-data
    edge mass, LIB basis), ``edges_90_pca`` / ``edges_99_pca`` (the same in the PCA basis), ``constant_edge_share``
    / ``constant_edge_share_pca`` (share of the layer's edge mass on edges to or from a constant direction) and
    ``constant_lambda`` (Λ₀ of the constant direction). Pictures: the Λ spectrum of every layer's data
    directions, and per layer the LIB and PCA edge heatmaps side by side (optionally the node-ablation curve);
    text: a summary table.

    Every rank computes the same bases on the whole probe set (the backward pass from the output is sequential,
    so there is no per-rank share to reduce).

    Args:
        layers: module names whose inputs are the node points, in forward order (at least one).
        truncation: eigenvalue threshold of both truncations (absolute, as in the reference implementation).
        num_samples: probe samples (the base's ``max_samples``).
        final_basis: basis of the output node: ``"logits"`` (raw logits: no rotation, no constant coordinate, no
            centring — the paper's), ``"pca"`` (PCA of the logits: centred, with the constant) or ``"identity"``
            (raw logits plus the constant coordinate).
        gradients: ``"plain"`` (Jacobians at the data point, the cheap default) or ``"integrated"`` (averaged over
            the path α·f by Gauss–Legendre quadrature, as the reference code), for M' and the edges.
        integration_points: Gauss–Legendre nodes of the integrated gradients.
        sections: optional, one per layer: a module, a module name, or a list of module names run in order,
            mapping the layer's input to the next layer's input (the last: to the output). Default: found from
            the model (see the error message of unsupported models for what is found automatically).
        ablation: also draw the node-ablation curve (accuracy with the top-k directions of a layer kept, LIB vs
            PCA); needs class-index targets in the probe data.
        max_jacobian_elements: memory bound for the batched Jacobians; larger ones are chunked, with a warning.
        **kwargs: the :class:`~lightning_probes.monitors.base.Monitor` arguments (schedule, probe_data, ...).

    Example:
        >>> InteractionBasisMonitor(layers=["features.0", "features.2", "classifier"], schedule=50)
        InteractionBasisMonitor(layers=['features.0', 'features.2', 'classifier'], schedule=every(50, start=0))
    """

    name = "lib"
    title = "Local Interaction Basis (Bushnaq et al. 2024)"
    probe_set: ProbeSet  # needs_probe_data is True: the base always builds one (it is None only for those without)

    def __init__(
        self,
        layers: Sequence[str],
        truncation: float = 1e-6,
        num_samples: int = 512,
        final_basis: Literal["logits", "pca", "identity"] = "logits",
        sections: Sequence[SectionSpec] | None = None,
        ablation: bool = False,
        max_jacobian_elements: int = 2**24,
        gradients: Literal["plain", "integrated"] = "plain",
        integration_points: int = 16,
        **kwargs: Any,
    ) -> None:
        if "max_samples" in kwargs:
            raise ValueError("InteractionBasisMonitor takes num_samples (the probe set size), not max_samples.")
        check_int("num_samples", num_samples, low=2, what="an integer >= 2 (centring needs two samples)")
        super().__init__(max_samples=num_samples, **kwargs)
        self.layers = layers
        self.truncation = truncation
        self.num_samples = num_samples
        self.final_basis = final_basis
        self.section_specs = sections
        self.ablation = ablation
        self.max_jacobian_elements = max_jacobian_elements
        self.gradients = gradients
        self.integration_points = integration_points
        self._validate()
        self.layers = list(layers)
        self.truncation = float(truncation)
        self.section_specs = None if sections is None else list(sections)
        self._sections: list[nn.Module] | None = None
        self.last_graph: InteractionGraph | None = None  # the latest bases and edges, for notebooks

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.layers!r}, schedule={self.schedule!r})"

    def _validate(self) -> None:
        check_names("layers", self.layers, example="['features.0', 'classifier']")
        check_real("truncation", self.truncation, "(0, inf)", what="a positive finite eigenvalue threshold")
        check_choice("final_basis", self.final_basis, {"logits": "raw logits, the paper's", "pca": "", "identity": ""})
        check_choice("gradients", self.gradients, ("plain", "integrated"))
        path_quadrature(self.integration_points)  # a positive integer, else a clear error
        for spec in self.section_specs or []:
            if not (isinstance(spec, (nn.Module, str)) or (isinstance(spec, Sequence) and spec
                                                            and all(isinstance(n, str) and n for n in spec))):
                raise TypeError(f"a section is a module, a module name or a non-empty list of names; got {spec!r}.")
        if self.section_specs is not None and len(self.section_specs) != len(self.layers):
            raise ValueError(
                f"sections needs one entry per layer ({len(self.layers)}): sections[i] maps the input of layers[i] "
                f"to the input of layers[i+1], the last one to the output; got {len(self.section_specs)}."
            )
        check_int("max_jacobian_elements", self.max_jacobian_elements)

    @override
    def state_key_fields(self) -> dict[str, Any]:
        fields = {"layers": self.layers, "truncation": self.truncation, "final_basis": self.final_basis}
        if self.gradients != "plain":  # only then: keys of plain-gradient monitors stay what they were
            fields["gradients"] = f"{self.gradients}({self.integration_points})"
        return fields

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "layers": list(self.layers), "truncation": self.truncation}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("layers")
        if saved is not None and list(saved) != self.layers:
            self.warn_once("resume-layers", f"the checkpoint was written for layers {saved}, this monitor watches "
                                            f"{self.layers}; its history is restored as saved.")
        super().load_state_dict(state_dict)

    progress_bar_scalars = ("n_directions",)  # per layer, shown on the progress bar after each probe

    @override
    def cheaper(self) -> str | None:
        """Halve the probe set whose Jacobians build the basis, down to 32 samples."""
        probe = self.probe_set
        if probe is None or not probe.ready or len(probe) < 64:
            return None
        before, keep = len(probe), len(probe) // 2
        self.probe_set = probe.select(slice(0, keep))  # any batch structure: the probe set cuts its own samples
        return f"{keep} samples instead of {before}"

    @override
    def dashboard(self) -> dict[str, dict[str, list]]:
        p = self.prefix
        return {
            "probes/lib": {
                "directions kept: LIB vs PCA": ["Multiline", [rf"{p}.*/n_directions(_pca)?$"]],
                # LIB's and PCA's edge counts apart: PCA's thousands flatten LIB's handful on one axis
                "edges holding 90% of the edge mass (LIB)": ["Multiline", [rf"{p}.*/edges_90$"]],
                "edges holding 90% of the edge mass (PCA)": ["Multiline", [rf"{p}.*/edges_90_pca$"]],
                "edges holding 99% of the edge mass (LIB)": ["Multiline", [rf"{p}.*/edges_99$"]],
                "edges holding 99% of the edge mass (PCA)": ["Multiline", [rf"{p}.*/edges_99_pca$"]],
                "share of the edge mass on the constant direction": [
                    "Multiline", [rf"{p}.*/constant_edge_share(_pca)?$"]
                ],
                "the constant direction's eigenvalue": ["Multiline", [rf"{p}.*/constant_lambda$"]],
            }
        }

    @override
    def min_probe_samples(self, pl_module: pl.LightningModule) -> int:
        return 2

    # ------------------------------------------------------------------ sections
    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_strategy(trainer, type(self).__name__, reads_weights=True)
        for name in self.layers:
            resolve_module(pl_module, name)
        for spec in self.section_specs or []:
            if isinstance(spec, nn.Module):
                continue
            for name in [spec] if isinstance(spec, str) else list(spec):
                if not isinstance(name, str):
                    raise TypeError(f"a section is a module, a module name or a list of names; got {spec!r}.")
                resolve_module(pl_module, name)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self.section_specs is not None:
            self._sections = [self._section_from_spec(pl_module, spec) for spec in self.section_specs]
        else:
            x, _ = self.probe_set.split(self.probe_set.batch(slice(0, 2), pl_module.device))
            with probing(pl_module):
                self._sections = find_sections(pl_module, self.layers, x, self.probe_set.logits).sections

    @staticmethod
    def _section_from_spec(pl_module: nn.Module, spec: SectionSpec) -> nn.Module:
        if isinstance(spec, nn.Module):
            return spec
        names = [spec] if isinstance(spec, str) else list(spec)
        modules = [resolve_module(pl_module, n) for n in names]
        return modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    # ------------------------------------------------------------------ the probe
    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeResult:
        assert self._sections is not None and self.probe_set is not None
        acts, targets = self._node_activations(pl_module)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            with full_parameters(trainer, pl_module):  # the Jacobians read the sections' weights: whole, never a shard
                graph = interaction_graph(self._sections, acts, self.truncation, self.final_basis,
                                          self.max_jacobian_elements, gradients=self.gradients,
                                          integration_points=self.integration_points)
        for w in caught:
            if w.category is UserWarning:  # e.g. "Jacobian too big, chunked": once per run, not at every probe
                text = str(w.message)
                key = "chunked" if "max_jacobian_elements" in text else "few-samples" if "probe samples" in text \
                    else text
                self.warn_once(key, text)
            else:  # anything else goes out as it came
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.last_graph = graph
        report = ProbeResult(scalars=layer_scalars(graph, self.layers))
        if self.render_images:
            self._pictures(report, graph, acts, targets)
        report.texts["summary"] = self._table(report.scalars)
        return report

    def _node_activations(self, pl_module: pl.LightningModule) -> tuple[list[Tensor], Tensor | None]:
        """Inputs of every named layer and the final node, over the whole probe set: L+1 tensors (N, ...)."""
        per_layer: list[list[Tensor]] = [[] for _ in self.layers]
        outputs, targets = [], []
        with capture(pl_module, {name: "input" for name in self.layers}) as seen:
            for x, y in self.probe_set.batches(pl_module.device):
                out = self.probe_set.logits(pl_module, x)
                for store, name in zip(per_layer, self.layers):
                    store.append(seen[name])
                if self.section_specs is None:
                    outputs.append(out.detach())
                if y is not None:
                    targets.append(y)
        acts = [torch.cat(chunks) for chunks in per_layer]
        if self.section_specs is None:
            acts.append(torch.cat(outputs))  # validated at fit start: the chain ends at the model's output
        else:
            assert self._sections is not None  # built at fit start from section_specs
            acts.append(self._sections[-1](acts[-1]).detach())
        return _token_flattened(self.layers, acts, torch.cat(targets) if targets else None)

    @drawing()  # so a time budget knows what pictures cost apart from the measurement
    def _pictures(
        self, report: ProbeResult, graph: InteractionGraph, acts: list[Tensor], targets: Tensor | None
    ) -> None:
        series = {}
        floor = max(self.truncation / 1e3, 1e-12)  # the axis ends there: eigenvalues far below the cut say nothing
        for layer, basis in zip(self.layers, graph.bases.lib):
            lam = basis.spectrum.clamp_min(floor).cpu()
            series[layer] = (torch.arange(1, len(lam) + 1), lam)
        report.images["lambda_spectrum"] = line_image(
            series, f"LIB eigenvalues Λ, step {self.step}", "direction", "Λ", logy=True,
            hlines={f"truncation {self.truncation:g}": self.truncation}, ymin=floor / 2,
        )
        names = [*self.layers, "output"]
        for i, layer in enumerate(self.layers):
            panels = []
            for basis_name, edges in (("LIB", graph.lib_edges[i]), ("PCA", graph.pca_edges[i])):
                share = (edges / edges.sum().clamp_min(1e-300)).clamp_min(1e-8).log10().cpu()  # (k_{i+1}, k_i)
                panels.append(heatmap_image(
                    share, f"{basis_name} edges {layer} → {names[i + 1]}", vmin=-8, vmax=0, cmap="viridis",
                    xlabel=f"{layer} direction", ylabel="next-layer direction", colorbar_label="log10 edge share",
                ))
            report.images[f"edges/{layer}"] = _side_by_side(panels)
        if self.ablation:
            if targets is None or targets.is_floating_point() or targets.ndim != 1:
                self.warn_once("ablation-targets", "ablation=True needs class-index targets of shape (N,) in the "
                                                   "probe data; the ablation curve is skipped.")
                return
            assert self._sections is not None  # built at fit start
            for i, layer in enumerate(self.layers):
                curves = {}
                for basis_name, basis in (("LIB", graph.bases.lib[i]), ("PCA", graph.bases.pca[i])):
                    ks = torch.arange(1, basis.n_directions + 1)
                    accuracy = ablation_curve(self._sections[i:], acts[i], basis, targets)
                    curves[basis_name] = (ks, accuracy.cpu())
                report.images[f"ablation/{layer}"] = line_image(
                    curves, f"node ablation at {layer}, step {self.step}", "top-k directions kept", "accuracy",
                    logx=True,
                )

    def _table(self, scalars: dict[str, float]) -> str:
        rows = []
        for layer in self.layers:
            g = lambda key: int(scalars[f"{layer}/{key}"])  # noqa: E731
            share = lambda key: f"{scalars[f'{layer}/{key}']:.1%}"  # noqa: E731
            rows.append([layer, g("n_directions"), g("n_directions_pca"), g("edges_90"), g("edges_90_pca"),
                         g("edges_99"), g("edges_99_pca"), share("constant_edge_share"),
                         share("constant_edge_share_pca")])
        headers = ["layer", "LIB dirs", "PCA dirs", "edges 90% LIB", "PCA", "edges 99% LIB", "PCA",
                   "constant's edge share LIB", "PCA"]
        return markdown_table(headers, rows)

    @override
    def summary(self) -> str:
        if not self.history:
            return super().summary()
        step, last = self.history[-1]
        lines = [f"[lib] at step {step} (LIB vs PCA; data directions, the constant direction apart):"]
        for layer in self.layers:
            g = lambda key: int(last[f"{layer}/{key}"])  # noqa: E731
            lines.append(f"[lib]   {layer}: directions {g('n_directions')} vs {g('n_directions_pca')}, "
                         f"edges 90% {g('edges_90')} vs {g('edges_90_pca')}, "
                         f"edges 99% {g('edges_99')} vs {g('edges_99_pca')}, constant's edge share "
                         f"{last[f'{layer}/constant_edge_share']:.1%} vs "
                         f"{last[f'{layer}/constant_edge_share_pca']:.1%}")
        return "\n".join(lines)


def layer_scalars(graph: InteractionGraph, layers: Sequence[str]) -> dict[str, float]:
    """The logged figures of every layer (``measures.interaction_basis.layer_figures``) as ``<layer>/<figure>``."""
    return {f"{layer}/{key}": value for layer, figures in zip(layers, layer_figures(graph))
            for key, value in figures.as_scalars().items()}


def _token_flattened(
    layers: Sequence[str], acts: list[Tensor], targets: Tensor | None
) -> tuple[list[Tensor], Tensor | None]:
    """Node activations of sequence layers (N, T, d) as token samples (N·T, d); a clear error where that is not
    the same computation.

    LIB treats each row as one sample of a function from one node to the next. Tokens are rows of their own when
    every node, the output included, is per token (N, T, ·) — the sections then act on each position alone (e.g.
    per-token MLPs to a token-classification head); flattening keeps them exact. A per-sample node after a
    sequence node means a section mixes or pools positions: refused.
    """
    if all(a.ndim == 2 for a in acts):
        return acts, targets
    n_t = acts[0].shape[:2]
    if not all(a.ndim == 3 and a.shape[:2] == n_t for a in acts):
        shapes = ", ".join(f"{name}: {tuple(a.shape)}" for name, a in zip([*layers, "output"], acts))
        raise ValueError(
            f"InteractionBasisMonitor needs node activations (N, d), or all of them per token (N, T, d) (then LIB "
            f"runs on the N·T tokens); got {shapes}. A section from a sequence node to a per-sample node pools or "
            "mixes positions, which LIB over tokens cannot represent: choose layers after the pooling (e.g. the "
            "classifier head), or sections that act on each token alone."
        )
    flat = [a.flatten(0, 1) for a in acts]  # (N·T, d)
    if targets is not None and tuple(targets.shape[:2]) == tuple(n_t):
        return flat, targets.flatten(0, 1)
    return flat, None


def _side_by_side(images: list[np.ndarray]) -> np.ndarray:
    """Join (H, W, 3) images left to right, padding heights with white."""
    height = max(img.shape[0] for img in images)
    padded = [np.pad(img, ((0, height - img.shape[0]), (0, 0), (0, 0)), constant_values=255) for img in images]
    return np.concatenate(padded, axis=1)
