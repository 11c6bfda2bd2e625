"""CondensationMonitor: neurons' input-weight directions collapsing onto a few lines in small-initialised nets.

Chen & Luo 2024 (arXiv 2402.15958, three-layer nets), Zhou, Zhang, Xu et al. 2022 and Luo, Xu, Ma & Zhang 2021
(two-layer nets, phase diagram); SCIENCE.md section 2. The figures are computed in
:mod:`lightning_probes.measures.condensation`; this file picks the layers, keeps the weights at fit start and
publishes the figures. It looks at weights only, so it needs no probe data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_probes.measures.condensation import CondensationStats, condensation_stats
from lightning_probes.monitors.base import Monitor, Report
from lightning_probes.probe_set import module_names, resolve_module
from lightning_probes.tensorboard import drawing, heatmap_image, markdown_table
from lightning_probes.schedules import Schedule
from lightning_probes.triggers import StopWhen, Trigger

__all__ = ["CondensationMonitor"]

LAYER_SCALARS = (
    "n_directions", "largest_cluster_share", "top2_share", "top4_share", "effective_rank", "stable_rank",
    "weight_norm", "relative_change", "dead_neurons",
)


class CondensationMonitor(Monitor):
    """Watch the hidden neurons' input-weight directions condense (SCIENCE.md section 2).

    Per watched ``nn.Linear`` layer, logs under ``probes/condensation/<layer>/``: ``n_directions`` (clusters of
    neuron directions [W_k, b_k] under average linkage on 1 - |cos|, cut at 1 - ``threshold``),
    ``largest_cluster_share``, ``top2_share``, ``top4_share``, ``effective_rank`` and ``stable_rank`` of W,
    ``weight_norm`` ‖W‖_F, ``relative_change`` ‖W - W_0‖_F / ‖W_0‖_F from the weights at fit start,
    ``dead_neurons`` (zero-norm neurons, left out of the clustering) and, once per run, ``initial_stage_end``: the
    first probed step at which ``relative_change`` exceeds ``stage_threshold`` (the end of the initial stage).
    Pictures: the cosine matrix with neurons ordered by cluster on a -1..1 colour scale (the papers' main figure)
    and a histogram of the pairwise cosines; text: a per-layer table of the figures.

    To stop (or checkpoint) when the initial stage ends, watch the relative change:
    ``StopWhen("layer2/relative_change", above=1.0)``.

    Args:
        layers: names of ``nn.Linear`` modules, or ``"auto"``: every Linear except the last one registered
            (the output layer).
        threshold: cosine level of one condensed direction, in (0, 1] (0.95 in the papers).
        signed: keep a direction and its opposite apart (distance 1 - cos); the default treats them as one line,
            right for odd activations like tanh.
        max_neurons: layers wider than this are analysed on a fixed, deterministic sample of ``max_neurons``
            neurons (directions, clusters and ranks of those rows; norms and relative change of the whole layer).
        stage_threshold: relative change that marks the end of the initial stage.
        seed: seed of the neuron sample.
        schedule, triggers, on_error, at_start, at_end, images_every, name: as in
            :class:`~lightning_probes.monitors.base.Monitor`. There is no probe data: only weights are read.

    Example:
        >>> CondensationMonitor(layers=["layer1", "layer2"], schedule=50)
        CondensationMonitor(layers=['layer1', 'layer2'], threshold=0.95, schedule=every(50, start=0))
    """

    name = "condensation"
    needs_probe_data = False

    def __init__(
        self,
        layers: str | Sequence[str] = "auto",
        threshold: float = 0.95,
        signed: bool = False,
        max_neurons: int = 2048,
        stage_threshold: float = 1.0,
        seed: int = 0,
        schedule: Schedule | int | None = None,
        triggers: Sequence[Trigger] = (),
        on_error: Literal["warn", "raise"] = "warn",
        at_start: bool = True,
        at_end: bool = True,
        images_every: int = 5,
        name: str | None = None,
    ) -> None:
        # the base's probe-data arguments are not offered: this monitor reads weights, never data
        super().__init__(schedule=schedule, triggers=triggers, on_error=on_error, at_start=at_start, at_end=at_end,
                         images_every=images_every, name=name)
        if isinstance(layers, str):
            if layers != "auto":
                raise ValueError(f"layers must be 'auto' or a list of Linear module names, got {layers!r}; "
                                 f"for one layer write layers=[{layers!r}].")
        elif not layers or not all(isinstance(n, str) and n for n in layers):
            raise ValueError("layers must be 'auto' or a non-empty list of module names, e.g. ['layer1', 'layer2'].")
        elif len(set(layers)) != len(layers):
            raise ValueError(f"layers must not repeat a name, got {list(layers)}.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"threshold is a cosine level in (0, 1] (0.95 in the papers), got {threshold!r}.")
        if isinstance(max_neurons, bool) or not isinstance(max_neurons, int) or max_neurons < 2:
            raise ValueError(f"max_neurons must be an integer >= 2, got {max_neurons!r}.")
        if not isinstance(stage_threshold, (int, float)) or not math.isfinite(stage_threshold) or stage_threshold <= 0:
            raise ValueError(f"stage_threshold must be a positive relative change, got {stage_threshold!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer (it seeds the neuron sample), got {seed!r}.")
        for trig in self.triggers:
            if isinstance(trig, StopWhen) and trig.metric.endswith("initial_stage_end"):
                raise ValueError(
                    "initial_stage_end is logged once, when it happens, so a trigger cannot watch it; stop on "
                    f"the relative change instead: StopWhen('<layer>/relative_change', above={stage_threshold})."
                )
        self.layer_spec = "auto" if isinstance(layers, str) else list(layers)
        self.layers: list[str] = [] if isinstance(layers, str) else list(layers)
        self.threshold = float(threshold)
        self.signed = bool(signed)
        self.max_neurons = max_neurons
        self.stage_threshold = float(stage_threshold)
        self.seed = seed
        self.initial_weights: dict[str, Tensor] = {}  # W_0 per layer (CPU), kept in the checkpoint
        self.stage_end: dict[str, int] = {}  # layer -> first probed step with relative_change > stage_threshold
        self.last_stats: dict[str, CondensationStats] = {}  # the latest figures, for notebooks

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(layers={self.layer_spec!r}, threshold={self.threshold}, "
                f"schedule={self.schedule!r})")

    @override
    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layer_spec, "threshold": self.threshold, "signed": self.signed}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "layers": list(self.layers),
            "initial_weights": {k: v.clone() for k, v in self.initial_weights.items()},
            "stage_end": dict(self.stage_end),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.initial_weights = {k: v.detach().cpu().clone() for k, v in state_dict.get("initial_weights", {}).items()}
        self.stage_end = {k: int(v) for k, v in state_dict.get("stage_end", {}).items()}

    @override
    def dashboard(self) -> dict[str, dict[str, list]]:
        p = re.escape(self.prefix)
        return {
            "probes/condensation": {
                "condensed directions": ["Multiline", [rf"{p}.*/n_directions$"]],
                "share of neurons in the largest clusters": [
                    "Multiline", [rf"{p}.*/(largest_cluster|top2|top4)_share$"]
                ],
                "effective and stable rank": ["Multiline", [rf"{p}.*/(effective|stable)_rank$"]],
                "relative change from init (initial stage)": ["Multiline", [rf"{p}.*/relative_change$"]],
                "weight norm": ["Multiline", [rf"{p}.*/weight_norm$"]],
                "end of the initial stage and dead neurons": [
                    "Multiline", [rf"{p}.*/initial_stage_end$", rf"{p}.*/dead_neurons$"]
                ],
            }
        }

    # ------------------------------------------------------------------ layers
    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        linear = module_names(pl_module, nn.Linear)
        if self.layer_spec == "auto":
            if len(linear) < 2:
                raise ValueError(
                    f"layers='auto' watches every Linear layer but the last (the output), and "
                    f"{type(pl_module).__name__} has {len(linear)} Linear layer(s): "
                    f"{', '.join(map(repr, linear)) or '(none)'}; name the layers to watch with layers=[...]."
                )
            self.layers = linear[:-1]
        for name in self.layers:
            layer = resolve_module(pl_module, name, nn.Linear)
            if layer.out_features < 2:
                raise ValueError(
                    f"layer {name!r} has {layer.out_features} neuron; condensation compares the directions of at "
                    f"least 2 neurons. Linear modules: {', '.join(map(repr, linear))}."
                )
            if layer.out_features > self.max_neurons:
                self.warn_once(
                    f"sampled-{name}",
                    f"layer {name!r} has {layer.out_features} neurons > max_neurons={self.max_neurons}: its "
                    f"directions, clusters and ranks are measured on a fixed sample of {self.max_neurons} neurons "
                    f"(seed {self.seed}); weight_norm and relative_change use the whole layer.",
                )

    def _layer(self, pl_module: nn.Module, name: str) -> nn.Linear:
        return resolve_module(pl_module, name, nn.Linear)  # type: ignore[return-value]

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        for name in self.layers:  # a resumed run keeps the W_0 restored from its checkpoint
            if name not in self.initial_weights:
                self.initial_weights[name] = self._layer(pl_module, name).weight.detach().cpu().clone()

    # ------------------------------------------------------------------ the probe
    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Report:
        report = Report()
        for name in self.layers:
            layer = self._layer(pl_module, name)
            weight, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
            if not bool(torch.isfinite(weight).all()) or (bias is not None and not bool(torch.isfinite(bias).all())):
                raise ValueError(f"layer {name!r} has NaN or inf weights at step {self.step}; its condensation is "
                                 "undefined (did training diverge?)")
            stats = condensation_stats(
                weight, bias, self.initial_weights.get(name), threshold=self.threshold, signed=self.signed,
                max_neurons=self.max_neurons, seed=self.seed,
            )
            self.last_stats[name] = stats
            report.scalars.update({f"{name}/{k}": v for k, v in stats.scalars().items()})
            if (name not in self.stage_end and stats.relative_change is not None
                    and stats.relative_change > self.stage_threshold):
                self.stage_end[name] = self.step
                report.scalars[f"{name}/initial_stage_end"] = float(self.step)
            if self.render_images:
                self._pictures(report, name, stats)
        if self.render_images:
            report.texts["layers"] = self._table()
        return report

    @drawing()  # so a time budget knows what pictures cost apart from the measurement
    def _pictures(self, report: Report, name: str, stats: CondensationStats) -> None:
        order = stats.order
        analysed = len(stats.neuron_indices)
        sampled = f", {analysed} of {stats.n_neurons} neurons" if stats.sampled else ""
        report.images[f"{name}/cosine_heatmap"] = heatmap_image(
            stats.cosine[order][:, order].numpy(),
            f"{name}: cos(u_k, u_j), step {self.step}\n{stats.n_directions} directions{sampled}",
            vmin=-1.0, vmax=1.0, cmap="RdBu_r", xlabel="neuron (ordered by cluster)",
            ylabel="neuron (ordered by cluster)", colorbar_label="cosine",
        )
        alive = stats.labels >= 0
        cos = stats.cosine[alive][:, alive]  # (m_alive, m_alive)
        iu = torch.triu_indices(len(cos), len(cos), offset=1)
        if iu.shape[1]:
            report.histograms[f"{name}/pairwise_cosines"] = cos[iu[0], iu[1]].float()

    def _table(self) -> str:
        rows = []
        for name in self.layers:
            s = self.last_stats.get(name)
            if s is None:
                continue
            rows.append([
                name, f"{len(s.neuron_indices)} / {s.n_neurons}", s.n_directions, s.largest_cluster_share,
                s.effective_rank, s.stable_rank, s.relative_change if s.relative_change is not None else "-",
                self.stage_end.get(name, "-"), s.dead_neurons,
            ])
        return markdown_table(
            ["layer", "neurons analysed", "n_directions", "largest share", "effective rank", "stable rank",
             "relative change", "initial stage end", "dead"], rows,
        )

    @override
    def summary(self) -> str:
        if not self.history:
            return super().summary()
        first_step, first = self.history[0]
        step, last = self.history[-1]
        lines = []
        for name in self.layers:
            if f"{name}/n_directions" not in last:
                continue
            end = self.stage_end.get(name)
            lines.append(
                f"[condensation] {name}: n_directions {int(first[f'{name}/n_directions'])} -> "
                f"{int(last[f'{name}/n_directions'])}, effective rank {first[f'{name}/effective_rank']:.3g} -> "
                f"{last[f'{name}/effective_rank']:.3g} (steps {first_step} -> {step}), initial stage "
                + (f"ended at step {end}" if end is not None else "not ended")
            )
        if self.stop_reason:
            lines.append(f"[condensation] stopped: {self.stop_reason}")
        return "\n".join(lines) or super().summary()
