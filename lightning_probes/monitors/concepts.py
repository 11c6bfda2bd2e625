"""ConceptMonitor: logical concept formulas for each activation range of chosen units, tracked over training.

Clustered Compositional Explanations (La Rosa, Gilpin, Capobianco, NeurIPS 2023, arXiv 2310.18443); the
formulas live in :mod:`lightning_probes.measures.concepts` (one probe's figures in its ``summary``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_probes.datasets import ConceptProbe
from lightning_probes.measures.concepts import (
    ConceptTable,
    InactiveUnitError,
    RangeExplanation,
    concept_summary,
    explain_unit,
    label_masked_inputs,
    label_masking_score,
    prediction_change_rate,
    prepare_concepts,
    zero_range,
)
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.probe_set import ProbeSet, Source, capture, probing, resolve_module
from lightning_probes.tensorboard import heatmap_image, markdown_table
from lightning_probes.validation import check_choice, check_int, check_name, check_real

__all__ = ["ConceptMonitor"]

_CHANNELS_FIRST_1D = (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.BatchNorm1d, nn.ConvTranspose1d)


class ConceptMonitor(Monitor):
    """Explain units of a layer with concept formulas, one per activation range (SCIENCE.md section 5).

    At each probe, every chosen unit's activations over the probe set are split into ``num_clusters`` ranges
    (exact 1-D k-means; 1 = the classic top-0.5% threshold), and for each range the formula of at most
    ``max_length`` concepts joined by AND, OR, AND NOT with the highest IoU is found (exact search by default).

    Logs under ``probes/concepts/``: ``mean_iou_range_<c>`` (mean IoU over units of range c, 1 = lowest),
    ``specialisation`` (our own summary, not a measure of the paper: mean IoU of the highest range minus the
    lowest), ``n_units_explained`` (units whose highest range has IoU >= ``iou_threshold``), ``n_inactive_units``
    (units that never activated on the probe set), ``n_formula_changes`` ((unit, range) pairs whose formula
    changed since the previous probe) and ``n_beam_fallbacks`` (searches that ran out of ``time_budget`` and fell
    back to beam search). The paper's further measures, each a mean over the explained units of range c:

    - ``mask_size_range_<c>``: the share of a sample's positions the range covers, over samples where it fires
      (:class:`~lightning_probes.measures.concepts.MaskStatistics`);
    - ``range_importance_range_<c>``: the share of probe samples whose predicted class changes when the unit's
      activations in range c are zeroed (a forward hook on ``layer``; needs (N, C) logits);
    - ``label_masking_range_<c>``: cosine similarity of the range's activations before and after the input
      outside the formula's region is perturbed, on the samples where the formula holds (per-position concepts
      and image inputs only: not logged otherwise);
    - the unspecialised-activation baseline: ``untrained_iou_range_<c>`` (the IoU of the first probe's formulas:
      the untrained network when the schedule probes at step 0, as the paper compares against),
      ``iou_gain_over_untrained_range_<c>`` (today's mean IoU minus it) and
      ``same_formula_as_untrained_range_<c>`` (share of units whose formula is still the first probe's).

    Text: the table unit x range -> formula, IoU, coverages, mask sizes, importance, label masking and the
    untrained formula. Picture: IoU per range and unit.

    Args:
        layer: module name whose output holds the units: (N, C) or (N, C, h, w); for a conv layer, name the
            block that ends with the activation (e.g. ``"conv2"`` of :class:`~lightning_probes.models.ShapesCNN`).
            A sequence layer's output (N, T, d) (a transformer block) has d units over T positions (the output of
            a ``Conv1d`` / 1-d pooling / ``BatchNorm1d`` is read as (N, C, L) instead).
        concepts: boolean concept masks aligned with the probe set, (N, K) per sample, (N, K, H, W) per
            position, or (N, K, T) per token of a sequence layer; or a
            :class:`~lightning_probes.datasets.ConceptProbe` (e.g. ``ShapesProbe``) that carries
            the probe inputs, the masks and the names together.
        concept_names: K names (taken from the ``ConceptProbe`` if omitted there; required with a tensor).
        units: channel indices to explain (default: all, or ``max_units`` of them).
        num_clusters: activation ranges per unit (paper: 5; 1 = top 0.5%).
        max_length: longest formula, 1 to 3.
        iou_threshold: a unit is explained when its highest range reaches this IoU (Bau et al. 2017 use 0.04).
        search: ``"exact"`` (optimal, branch and bound) or ``"beam"`` (the paper's beam search).
        time_budget: seconds allowed to one exact search before it falls back to beam search (None: no limit).
        beam_width: beam size (paper: 5).
        first_beam: atoms in the first beam (paper: 10).
        max_units: with ``units`` unset, explain at most this many units, evenly spaced over the channels (each
            unit is one search per range: this bounds the probe's cost on wide layers).
        range_importance: measure range importance (one forward pass of the probe set per unit and range).
        label_masking: measure label masking (one forward pass of the formula's samples per unit and range).
        probe_data: the probe inputs the concepts describe, sample for sample: ``x``, ``(x, y)`` or a Dataset;
            taken from a ``ConceptProbe``; with a concept tensor and no probe_data, the first N samples of the
            training dataset (read by index, so unaffected by shuffling).
        max_samples: leave unset: the probe set is exactly the N samples the concepts describe.
        **kwargs: the other :class:`~lightning_probes.monitors.base.Monitor` arguments (schedule, triggers, ...).

    Example:
        >>> from lightning_probes.datasets import ShapesProbe
        >>> ConceptMonitor("conv2", ShapesProbe(num_samples=16, size=16), schedule=50)
        ConceptMonitor(layer='conv2', concepts=11, units=all, num_clusters=5, schedule=every(50, start=0))
    """

    name = "concepts"
    title = "Clustered compositional explanations (La Rosa et al. 2023)"
    probe_set: ProbeSet  # needs_probe_data is True: the base always builds one (it is None only for those without)

    def __init__(
        self,
        layer: str,
        concepts: Tensor | ConceptProbe,
        concept_names: Sequence[str] | None = None,
        units: Sequence[int] | None = None,
        num_clusters: int = 5,
        max_length: int = 3,
        iou_threshold: float = 0.04,
        search: Literal["exact", "beam"] = "exact",
        time_budget: float | None = 10.0,
        beam_width: int = 5,
        first_beam: int = 10,
        max_units: int | None = None,
        range_importance: bool = True,
        label_masking: bool = True,
        probe_data: Source | None = None,
        max_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(concepts, ConceptProbe):
            if probe_data is not None:
                raise ValueError("a ConceptProbe carries its own probe inputs; do not also pass probe_data.")
            probe_data = concepts.inputs if concepts.targets is None else (concepts.inputs, concepts.targets)
            concept_names = list(concepts.concept_names) if concept_names is None else concept_names
            concepts = concepts.concepts
        if not isinstance(concepts, Tensor):
            raise TypeError(f"concepts must be a boolean tensor or a ConceptProbe, got {type(concepts).__name__}.")
        if concepts.dim() == 3:  # per-position concepts of a sequence (N, K, T): maps T x 1, like a layer's (N, T, d)
            concepts = concepts.unsqueeze(-1)
        # validates dtype, shape, emptiness; per-sample concepts get their table once the map size is known
        table = prepare_concepts(concepts)
        self._table: ConceptTable | None = table if concepts.dim() == 4 else None
        if max_samples is not None and max_samples < len(concepts):
            raise ValueError(f"max_samples={max_samples} would cut the probe set below the {len(concepts)} samples the "
                             "concepts describe; leave max_samples unset (it follows the concepts).")
        super().__init__(probe_data="train" if probe_data is None else probe_data, max_samples=len(concepts), **kwargs)
        self.layer = layer
        self.concepts = concepts.bool()
        self.concept_names: list[str] = concept_names  # type: ignore[assignment]  # made a list in _validate()
        self.units = units
        self.max_units = max_units
        self.num_clusters, self.max_length, self.iou_threshold = num_clusters, max_length, iou_threshold
        self.search, self.time_budget, self.beam_width, self.first_beam = search, time_budget, beam_width, first_beam
        self._validate()  # also turns concept_names into a list of str, units into a list of int
        self.range_importance, self.label_masking = bool(range_importance), bool(label_masking)
        self.last_formulas: dict[str, str] = {}  # "unit/range" -> formula name at the previous probe
        # "unit/range" -> (formula name, IoU) at the first probe: the unspecialised baseline
        self.untrained: dict[str, tuple[str, float]] = {}
        self.untrained_step: int | None = None
        self._units: list[int] = []
        self._importance_ok = True

    def _validate(self) -> None:
        check_name("layer", self.layer, what="the name of a module whose output holds the units, e.g. layer='conv2'")
        k = self.concepts.shape[1]
        if self.concept_names is None:
            raise ValueError(f"concept_names is required with a concept tensor: give {k} names.")
        names = [str(n) for n in self.concept_names]
        if len(names) != k or len(set(names)) != k:
            raise ValueError(f"concept_names must be {k} distinct names (one per concept), got {len(names)}.")
        self.concept_names = names
        if self.units is not None:
            try:  # operator.index: ints (and numpy / 0-d tensor ints), never a float or a string
                units = [operator.index(u) for u in self.units]
            except TypeError:
                raise TypeError(f"units must be a list of integer channel indices, got {self.units!r}.") from None
            if not units or min(units) < 0 or len(set(units)) != len(units):
                raise ValueError(f"units must be distinct non-negative channel indices, got {units}.")
            self.units = units
        check_int("max_units", self.max_units, what="a positive integer or None", optional=True)
        if self.max_units is not None and self.units is not None:
            raise ValueError("give units (which ones) or max_units (how many), not both.")
        check_int("num_clusters", self.num_clusters)
        check_choice("max_length", self.max_length, (1, 2, 3))
        check_real("iou_threshold", self.iou_threshold, "[0, 1]")
        check_choice("search", self.search, ("exact", "beam"))
        check_real("time_budget", self.time_budget, "(0, inf]", what="positive seconds or None", optional=True)
        check_int("beam_width", self.beam_width)
        check_int("first_beam", self.first_beam)

    def __repr__(self) -> str:
        units = "all" if self.units is None else self.units
        return (f"{type(self).__name__}(layer={self.layer!r}, concepts={len(self.concept_names)}, units={units}, "
                f"num_clusters={self.num_clusters}, schedule={self.schedule!r})")

    @override
    def state_key_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "units": self.units, "num_clusters": self.num_clusters}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_formulas": dict(self.last_formulas), "untrained": dict(self.untrained),
                "untrained_step": self.untrained_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.last_formulas = dict(state_dict.get("last_formulas", {}))
        self.untrained = dict(state_dict.get("untrained", {}))
        self.untrained_step = state_dict.get("untrained_step")

    progress_bar_scalars = ("specialisation", "n_units_explained")  # shown on the progress bar after each probe

    @override
    def cheaper(self) -> str | None:
        """Explain every other unit of those explained so far (each unit is one formula search per range)."""
        if len(self._units) <= 1:
            return None
        before = len(self._units)
        self._units = self._units[::2]
        return f"{len(self._units)} units explained instead of {before}"

    @override
    def dashboard(self) -> dict[str, dict[str, list]]:
        p = self.prefix
        return {
            "probes/concepts": {
                "specialisation (highest - lowest range)": ["Multiline", [f"{p}specialisation$"]],
                "mean IoU per activation range": ["Multiline", [f"{p}mean_iou_range_[0-9]+$"]],
                "units": ["Multiline", [f"{p}n_units_explained$", f"{p}n_inactive_units$"]],
                "formula changes since the previous probe": ["Multiline", [f"{p}n_formula_changes$"]],
                "beam-search fallbacks": ["Multiline", [f"{p}n_beam_fallbacks$"]],
                "mask size per range (share of positions)": ["Multiline", [f"{p}mask_size_range_[0-9]+$"]],
                "range importance (prediction changes)": ["Multiline", [f"{p}range_importance_range_[0-9]+$"]],
                "label masking (cosine)": ["Multiline", [f"{p}label_masking_range_[0-9]+$"]],
                "IoU against the untrained network": [
                    "Multiline", [f"{p}untrained_iou_range_[0-9]+$", f"{p}iou_gain_over_untrained_range_[0-9]+$"]
                ],
                "formulas unchanged since the untrained network": [
                    "Multiline", [f"{p}same_formula_as_untrained_range_[0-9]+$"]
                ],
            }
        }

    # ------------------------------------------------------------------ checks against the model and data
    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = resolve_module(pl_module, self.layer)  # lists the real module names when missing
        self._channels_first = isinstance(module, _CHANNELS_FIRST_1D)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        assert self.probe_set is not None
        if len(self.probe_set) != len(self.concepts):
            raise ValueError(
                f"the concepts describe {len(self.concepts)} samples but the probe set has {len(self.probe_set)}; "
                "the concept masks must be aligned with the probe data, sample for sample."
            )
        x, _ = self.probe_set.split(self.probe_set.batch(slice(0, 1), pl_module.device))
        with probing(pl_module), capture(pl_module, {self.layer: "output"}) as seen:
            self.probe_set.forward(pl_module, x)  # one sample: the shape of the layer's output
        self._output_dim = seen[self.layer].dim()
        self._check_layer_output(self._units_first(seen[self.layer]))

    def _check_layer_output(self, out: Tensor) -> None:
        if out.dim() not in (2, 4):
            raise ValueError(f"layer {self.layer!r} outputs shape {tuple(out.shape)}; ConceptMonitor needs units as "
                             "(N, C), (N, C, h, w) or a sequence (N, T, d).")
        channels = out.shape[1]
        if self.units is not None:
            self._units = list(self.units)
        elif self.max_units is not None and self.max_units < channels:  # evenly spaced, first and last included
            self._units = torch.linspace(0, channels - 1, self.max_units).round().long().unique().tolist()
        else:
            self._units = list(range(channels))
        if max(self._units) >= channels:
            raise ValueError(f"units {self._units} out of range: layer {self.layer!r} has {channels} channels.")
        if self.concepts.dim() == 4:
            if out.dim() == 2:
                raise ValueError(f"per-position concepts {tuple(self.concepts.shape)} need a spatial layer, but "
                                 f"{self.layer!r} outputs (N, C) = {tuple(out.shape)}; give per-sample concepts "
                                 "(N, K) or explain a convolutional layer.")
            (h, w), (big_h, big_w) = out.shape[2:], self.concepts.shape[2:]
            if h > big_h or w > big_w or big_h * w != big_w * h:
                raise ValueError(f"layer {self.layer!r} maps are {h}x{w} but the concept masks are {big_h}x{big_w}; "
                                 "the masks must be at least as large, with the same aspect ratio (maps are "
                                 "upsampled to the mask size).")

    def _unit_axis_is_last(self) -> bool:
        """Whether the layer's units lie on its last axis (a token-major sequence output (N, T, d))."""
        return getattr(self, "_output_dim", 0) == 3 and not getattr(self, "_channels_first", False)

    def _units_first(self, out: Tensor) -> Tensor:
        """A sequence layer's (N, T, d) as d units over a T x 1 map, (N, d, T, 1); (N, C, L) as (N, C, L, 1)."""
        if out.dim() != 3:
            return out
        return (out if getattr(self, "_channels_first", False) else out.transpose(1, 2)).unsqueeze(-1)

    @override
    def trial_view(self, indices: Tensor) -> None:
        self.concepts = self.concepts[indices]  # aligned with the trial's probe samples
        self._table = prepare_concepts(self.concepts) if self.concepts.dim() == 4 else None

    def _concept_table(self, acts: Tensor) -> ConceptTable:
        if self._table is None or (self.concepts.dim() == 2 and self._table.spatial_size != tuple(acts.shape[2:])):
            size = (acts.shape[2], acts.shape[3]) if acts.dim() == 4 else None
            self._table = prepare_concepts(self.concepts, spatial_size=size)  # per-sample concepts on maps
        return self._table

    # ------------------------------------------------------------------ the probe
    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeResult:
        assert self.probe_set is not None
        chunks = []
        # every rank explains the whole probe set: formulas need all samples at once, and ranks then agree
        with capture(pl_module, {self.layer: "output"}) as seen:
            for x, _ in self.probe_set.batches(pl_module.device):
                self.probe_set.forward(pl_module, x)
                chunks.append(self._units_first(seen[self.layer])[:, self._units].float().cpu())
        acts = torch.cat(chunks)  # (N, U) or (N, U, h, w)
        table = self._concept_table(acts)
        explained: dict[int, list[RangeExplanation]] = {}
        inactive: list[int] = []
        for column, unit in enumerate(self._units):
            try:
                explained[unit] = explain_unit(
                    acts[:, column], table, self.concept_names, self.num_clusters, self.max_length, self.search,
                    self.beam_width, self.first_beam, self.time_budget,
                )
            except InactiveUnitError:
                inactive.append(unit)
        extra = self._paper_measures(pl_module, acts, explained)
        return self._report(explained, inactive, extra)

    # ------------------------------------------------------------------ range importance and label masking
    def _forward(self, pl_module: pl.LightningModule, x: Any) -> Tensor:
        """The model's logits on a probe batch, through the probe set's call rule (dict batches, hooks)."""
        assert self.probe_set is not None
        return self.probe_set.logits(pl_module, x)

    def _paper_measures(self, pl_module: pl.LightningModule, acts: Tensor,
                        explained: dict[int, list[RangeExplanation]]) -> dict[str, dict[str, float]]:
        """Per "unit/range": ``importance`` and ``label_masking`` (NaN where not measured)."""
        out: dict[str, dict[str, float]] = {f"{u}/{r.range_index + 1}": {"importance": math.nan,
                                                                         "label_masking": math.nan}
                                            for u, rs in explained.items() for r in rs}
        if not explained or not (self.range_importance or self.label_masking):
            return out
        assert self.probe_set is not None
        device = pl_module.device
        x_all = self.probe_set.inputs
        logits = (torch.cat([self._forward(pl_module, x).float().cpu() for x, _ in self.probe_set.batches(device)])
                  if self.range_importance else torch.empty(0))
        self._importance_ok = logits.ndim == 2
        if self.range_importance and logits.ndim != 2:
            self.warn_once("importance", f"range importance needs (N, C) logits, the model returns "
                                         f"{tuple(logits.shape)}; range_importance_range_<c> is not logged.")
        columns = {u: self._units.index(u) for u in explained}
        for unit, ranges in explained.items():
            for r in ranges:
                key = f"{unit}/{r.range_index + 1}"
                if self.range_importance and logits.ndim == 2:
                    ablated = self._ablated_logits(pl_module, unit, r.low, r.high)
                    out[key]["importance"] = prediction_change_rate(logits, ablated)
                if self.label_masking and self._can_label_mask(x_all, r):
                    out[key]["label_masking"] = self._label_masking(pl_module, acts[:, columns[unit]], unit, r)
        return out

    def _ablated_logits(self, pl_module: pl.LightningModule, unit: int, low: float, high: float) -> Tensor:
        """Logits with ``unit``'s activations in [low, high] zeroed at ``layer`` (a forward hook)."""
        # the unit's axis as _units_first reads it: dim 1, or the last dim of a token-major sequence (N, T, d)
        last = self._unit_axis_is_last()

        def hook(_mod: Any, _args: Any, output: Tensor) -> Tensor:
            output = output.clone()
            if last:
                output[..., unit] = zero_range(output[..., unit], low, high)
            else:
                output[:, unit] = zero_range(output[:, unit], low, high)
            return output

        assert self.probe_set is not None
        handle = resolve_module(pl_module, self.layer).register_forward_hook(hook)
        try:
            return torch.cat([self._forward(pl_module, x).float().cpu()
                              for x, _ in self.probe_set.batches(pl_module.device)])
        finally:
            handle.remove()

    def _label_masking_applies(self) -> bool:
        """Label masking needs per-position concepts and image inputs (a region to keep)."""
        x = None if self.probe_set is None else self.probe_set.inputs
        return (self.label_masking and self.concepts.dim() == 4 and isinstance(x, Tensor) and x.is_floating_point()
                and x.dim() in (3, 4))

    def _can_label_mask(self, x: Tensor, r: RangeExplanation) -> bool:
        return (self.concepts.dim() == 4 and r.formula_mask is not None and r.formula_mask.dim() == 3
                and isinstance(x, Tensor) and x.is_floating_point() and x.dim() in (3, 4))

    def _label_masking(self, pl_module: pl.LightningModule, unit_acts: Tensor, unit: int, r: RangeExplanation) -> float:
        assert self.probe_set is not None and r.formula_mask is not None
        rows = torch.nonzero(r.formula_mask.flatten(1).any(1)).flatten()  # samples where the formula holds
        if rows.numel() == 0:
            return math.nan
        generator = torch.Generator().manual_seed(1000 * unit + r.range_index)  # the same noise at every probe
        masked = label_masked_inputs(self.probe_set.inputs[rows], r.formula_mask[rows], generator)
        after = []
        with capture(pl_module, {self.layer: "output"}) as seen:
            for start in range(0, len(masked), self.probe_set.batch_size):
                self._forward(pl_module, masked[start : start + self.probe_set.batch_size].to(pl_module.device))
                after.append(seen[self.layer][:, unit].float().cpu())
        return label_masking_score(unit_acts[rows], torch.cat(after), r.low, r.high)

    def _report(self, explained: dict[int, list[RangeExplanation]], inactive: list[int],
                extra: dict[str, dict[str, float]] | None = None) -> ProbeResult:
        extra = extra or {}
        if self.untrained_step is None:  # the first probe is the unspecialised baseline
            self.untrained = {f"{u}/{r.range_index + 1}": (r.name, r.metrics.iou) for u, rs in explained.items()
                              for r in rs}
            self.untrained_step = self.step
            if self.step > 0:
                self.warn_once("untrained", f"the first concept probe ran at step {self.step}, not 0: the "
                                            "untrained_* baseline describes a partly trained network.")
        summary = concept_summary(
            explained, inactive, self.num_clusters, self.iou_threshold, self.last_formulas, self.untrained, extra,
            importance_measured=self.range_importance and self._importance_ok,
            label_masking_measured=self._label_masking_applies(),
        )
        self.last_formulas = summary.formulas
        scalars: dict[str, float] = {f"mean_iou_range_{c + 1}": r.mean_iou for c, r in enumerate(summary.ranges)}
        scalars["specialisation"] = summary.specialisation
        scalars["n_units_explained"] = float(summary.n_units_explained)
        scalars["n_inactive_units"] = float(summary.n_inactive_units)
        scalars["n_formula_changes"] = float(summary.n_formula_changes)
        scalars["n_beam_fallbacks"] = float(summary.n_beam_fallbacks)
        for c, r in enumerate(summary.ranges, 1):
            scalars[f"mask_size_range_{c}"] = r.mask_size
            if r.importance is not None:
                scalars[f"range_importance_range_{c}"] = r.importance
            if r.label_masking is not None:
                scalars[f"label_masking_range_{c}"] = r.label_masking
            scalars[f"untrained_iou_range_{c}"] = r.untrained_iou
            scalars[f"iou_gain_over_untrained_range_{c}"] = r.iou_gain_over_untrained
            scalars[f"same_formula_as_untrained_range_{c}"] = r.same_formula_as_untrained
        fallbacks = summary.n_beam_fallbacks
        if fallbacks:
            self.warn_once("fallback", f"{fallbacks} exact formula searches exceeded time_budget={self.time_budget} s "
                                       f"with {len(self.concept_names)} concepts and fell back to beam search "
                                       "(may miss the optimum); raise time_budget or use fewer concepts.")
        if inactive:
            self.warn_once("inactive", f"units {inactive} of {self.layer!r} never activate on the probe set at step "
                                       f"{self.step}; they are reported, not explained.")
        report = ProbeResult(scalars=scalars)
        report.texts["explanations"] = self._table_text(explained, inactive, fallbacks, extra)
        if self.render_images and len(summary.full_units):
            ious, units = summary.ious, summary.full_units
            report.images["iou_per_range"] = heatmap_image(  # ranges numbered as in the scalars: 1 = lowest
                ious, f"IoU of the best formula, step {self.step}", vmin=0.0, vmax=1.0, cmap="viridis",
                xlabel="activation range (1 = lowest)", ylabel="unit", colorbar_label="IoU",
                xticklabels=[str(c + 1) for c in range(ious.shape[1])], yticklabels=[str(u) for u in units],
            )
        return report

    def _table_text(self, explained: dict[int, list[RangeExplanation]], inactive: list[int], fallbacks: int,
                    extra: dict[str, dict[str, float]] | None = None) -> str:
        extra = extra or {}
        rows = []
        for u, ranges in explained.items():
            for r in ranges:
                key = f"{u}/{r.range_index + 1}"
                more = extra.get(key, {})
                rows.append([
                    u, r.range_index + 1, f"[{r.low:.3g}, {r.high:.3g}]", r.name, r.metrics.iou,
                    r.metrics.detection_accuracy, r.metrics.activation_coverage, r.metrics.sample_coverage,
                    r.metrics.explanation_coverage, math.nan if r.sizes is None else r.sizes.unit_mask_size,
                    math.nan if r.sizes is None else r.sizes.formula_mask_size, more.get("importance", math.nan),
                    more.get("label_masking", math.nan), self.untrained.get(key, ("-", math.nan))[0], r.method,
                ])
        text = markdown_table(
            ["unit", "range", "activations", "formula", "IoU", "detection acc.", "activation cov.", "sample cov.",
             "explanation cov.", "mask size", "formula size", "importance", "label masking",
             f"untrained formula (step {self.untrained_step})", "search"], rows,
        )
        notes = []
        if inactive:
            notes.append(f"Units that never activate on the probe set (not explained): {inactive}.")
        short = [u for u, r in explained.items() if len(r) < self.num_clusters]
        if short:
            notes.append(f"Units with fewer distinct activation values than {self.num_clusters} ranges "
                         f"(left out of the per-range means): {short}.")
        if fallbacks:
            notes.append(f"{fallbacks} searches exceeded the {self.time_budget} s budget and used beam search.")
        return "\n\n".join([*notes, text])

    @override
    def summary(self) -> str:
        if not self.history:
            return super().summary()
        step, last = self.history[-1]
        ranges = ", ".join(f"{last[f'mean_iou_range_{c + 1}']:.3f}" for c in range(self.num_clusters))
        return (f"[concepts] {self.layer!r} at step {step}: mean IoU per range (lowest..highest) {ranges}; "
                f"specialisation {last['specialisation']:.3f}; {int(last['n_units_explained'])} of "
                f"{len(self._units)} units explained (IoU >= {self.iou_threshold}), "
                f"{int(last['n_inactive_units'])} inactive")


