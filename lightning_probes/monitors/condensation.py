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

from lightning_probes.measures.condensation import (
    CondensationStats,
    GrowthPeak,
    all_finite,
    condensation_stats,
    orientation_amplitude,
)
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.probe_set import module_names, resolve_module
from lightning_probes.schedules import Schedule
from lightning_probes.tensorboard import drawing, heatmap_image, markdown_table, scatter_image
from lightning_probes.triggers import StopWhen, Trigger
from lightning_probes.validation import check_choice, check_int, check_names, check_real
from lightning_probes.weights import NEURON_LAYERS, check_strategy, neuron_count, neuron_weights

__all__ = ["CondensationMonitor"]

LAYER_SCALARS = (
    "n_directions", "largest_cluster_share", "top2_share", "top4_share", "effective_rank", "stable_rank",
    "weight_norm", "relative_change", "dead_neurons", "norm_ratio", "largest_cluster_norm_share", "top2_norm_share",
    "top4_norm_share", "n_directions_weighted", "n_directions_random", "log_norm_rate", "log_change_rate",
)
STAGE_RULES = ("norm_growth", "relative_change")


class CondensationMonitor(Monitor):
    """Watch the hidden neurons' input-weight directions condense (SCIENCE.md section 2).

    Per watched layer (``layers``), logs under ``probes/condensation/<layer>/``: ``n_directions`` (clusters of
    neuron directions [W_k, b_k] under average linkage on 1 - |cos|, cut at 1 - ``threshold``; every alive neuron
    counts), ``n_directions_weighted`` (the same count over the fewest neurons carrying 99% of Σ‖[W_k, b_k]‖², so
    small never-aligned neurons do not count as directions), ``n_directions_random`` (the chance level: the count
    for as many random directions of the same dimension), ``largest_cluster_share``, ``top2_share``, ``top4_share``
    (share of neurons in the largest clusters), ``largest_cluster_norm_share``, ``top2_norm_share``,
    ``top4_norm_share`` (share of Σ‖[W_k, b_k]‖² in the heaviest clusters), ``effective_rank`` and ``stable_rank``
    of W (of [W, b] when the layer's input is 1-D), ``weight_norm`` ‖W‖_F, ``norm_ratio`` ‖W‖_F / ‖W_0‖_F,
    ``relative_change`` ‖W - W_0‖_F / ‖W_0‖_F from the weights at fit start, ``log_norm_rate`` and
    ``log_change_rate`` (d log norm_ratio / d step and d log relative_change / d step between consecutive probes:
    about constant during a two-layer net's initial stage, rising towards a three-layer net's blow-up),
    ``dead_neurons`` (zero-norm neurons, left out of the clustering) and, once per run, ``initial_stage_end``.

    The initial stage ends when the amplitudes blow up (``stage_by="norm_growth"``, default): the step at which
    ``log_norm_rate`` peaked, reported once the rate has halved, provided the norm has grown ``stage_threshold``
    times (default 2) and the peak is at least twice the first rate (a plateau came first; γ = 0.5 reports none).
    ``stage_by="relative_change"`` is the first definition: the first probe with relative change above
    ``stage_threshold`` (default 1) — it fires during the plateau, as rotation moves the weights too.
    Pictures: the cosine matrix on a -1..1 colour scale, neurons ordered by the leading eigenvector of the
    cosine matrix (``heatmap_order="cluster"``: by cluster), a histogram of the pairwise cosines and, for a layer
    with a 1-D input, each neuron's orientation angle against its amplitude |a_k|·‖(w_k, b_k)‖ (a_k: the neuron's
    outgoing weights in the next Linear layer); text: a per-layer table of the figures.

    To stop (or checkpoint) when the amplitudes start to grow, watch the norm ratio:
    ``StopWhen("layer2/norm_ratio", above=2.0)``.

    Args:
        layers: names of neuron layers, or ``"auto"``: every Linear and Conv layer except the last one registered
            (the output layer). A Conv1d/2d/3d output channel is one neuron, its input weight the flattened kernel;
            named explicitly, an ``nn.MultiheadAttention`` (the rows of ``in_proj_weight``) or any module with a 2-D
            ``weight`` works too (:func:`~lightning_probes.weights.neuron_weights`). Weights are read in full under
            FSDP, never a shard; DeepSpeed is refused at setup.
        threshold: cosine level of one condensed direction, in (0, 1] (0.95 in the papers).
        signed: keep a direction and its opposite apart (distance 1 - cos); the default treats them as one line,
            right for odd activations like tanh.
        max_neurons: layers wider than this are analysed on a fixed, deterministic sample of ``max_neurons``
            neurons (directions, clusters and ranks of those rows; norms and relative change of the whole layer).
        stage_by: ``"norm_growth"`` (the peak of d log‖W‖/d step) or ``"relative_change"`` (the first definition).
        stage_threshold: ``norm_growth``: the growth ‖W‖/‖W_0‖ needed before a peak counts (default 2);
            ``relative_change``: the relative change that marks the end (default 1).
        heatmap_order: ``"eigenvector"`` (default) or ``"cluster"``.
        seed: seed of the neuron sample and of the random-direction baseline.
        schedule, triggers, on_error, at_start, at_end, images_every, name: as in
            :class:`~lightning_probes.monitors.base.Monitor`. There is no probe data: only weights are read.

    Example:
        >>> CondensationMonitor(layers=["layer1", "layer2"], schedule=50)
        CondensationMonitor(layers=['layer1', 'layer2'], threshold=0.95, schedule=every(50, start=0))
    """

    name = "condensation"
    title = "Condensation (Chen & Luo 2024; Zhou et al. 2022)"
    needs_probe_data = False

    def __init__(
        self,
        layers: str | Sequence[str] = "auto",
        threshold: float = 0.95,
        signed: bool = False,
        max_neurons: int = 2048,
        stage_threshold: float | None = None,
        seed: int = 0,
        stage_by: Literal["norm_growth", "relative_change"] = "norm_growth",
        heatmap_order: Literal["eigenvector", "cluster"] = "eigenvector",
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
        if stage_threshold is None:
            stage_threshold = 2.0 if stage_by == "norm_growth" else 1.0
        self.layer_spec = layers  # "auto" or the list of names, once validated
        self.threshold = threshold
        self.signed = bool(signed)
        self.max_neurons = max_neurons
        self.stage_threshold = stage_threshold
        self.stage_by = stage_by
        self.heatmap_order = heatmap_order
        self.seed = seed
        self._validate()
        self.layer_spec = "auto" if isinstance(layers, str) else list(layers)
        self.layers: list[str] = [] if isinstance(layers, str) else list(layers)
        self.threshold = float(threshold)
        self.stage_threshold = float(stage_threshold)
        self.growth: dict[str, GrowthPeak] = {}  # layer -> the norm-growth peak detector
        self.last_change: dict[str, tuple[int, float]] = {}  # layer -> (step, relative change) of the last probe
        self.initial_weights: dict[str, Tensor] = {}  # W_0 per layer (CPU), kept in the checkpoint
        self.stage_end: dict[str, int] = {}  # layer -> first probed step with relative_change > stage_threshold
        self.last_stats: dict[str, CondensationStats] = {}  # the latest figures, for notebooks

    def _validate(self) -> None:
        if self.layer_spec != "auto":
            if isinstance(self.layer_spec, str):
                raise ValueError(f"layers must be 'auto' or a list of Linear module names, got {self.layer_spec!r}; "
                                 f"for one layer write layers=[{self.layer_spec!r}].")
            check_names("layers", self.layer_spec, example="['layer1', 'layer2'] (or 'auto')")
        check_real("threshold", self.threshold, "(0, 1]", what="a cosine level in (0, 1] (0.95 in the papers)")
        check_int("max_neurons", self.max_neurons, low=2)
        check_choice("stage_by", self.stage_by, {"norm_growth": "the amplitude blow-up",
                                                 "relative_change": "the first definition"})
        check_choice("heatmap_order", self.heatmap_order, ("eigenvector", "cluster"))
        check_real("stage_threshold", self.stage_threshold, "(0, inf)", what="a positive relative change")
        if self.stage_by == "norm_growth" and self.stage_threshold < 1:
            raise ValueError(f"with stage_by='norm_growth', stage_threshold is a growth ‖W‖/‖W_0‖ >= 1, got "
                             f"{self.stage_threshold!r}.")
        check_int("seed", self.seed, low=None, what="an integer (it seeds the neuron sample)")
        for trig in self.triggers:
            if isinstance(trig, StopWhen) and trig.metric.endswith("initial_stage_end"):
                raise ValueError(
                    "initial_stage_end is logged once, when it happens, so a trigger cannot watch it; stop on "
                    "the amplitude growth instead: StopWhen('<layer>/norm_ratio', above=2.0)."
                )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(layers={self.layer_spec!r}, threshold={self.threshold}, "
                f"schedule={self.schedule!r})")

    @override
    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layer_spec, "threshold": self.threshold, "signed": self.signed,
                "stage_by": self.stage_by}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "layers": list(self.layers),
            "initial_weights": {k: v.clone() for k, v in self.initial_weights.items()},
            "stage_end": dict(self.stage_end),
            "growth": {k: v.state_dict() for k, v in self.growth.items()},
            "last_change": dict(self.last_change),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.initial_weights = {k: v.detach().cpu().clone() for k, v in state_dict.get("initial_weights", {}).items()}
        self.stage_end = {k: int(v) for k, v in state_dict.get("stage_end", {}).items()}
        self.growth = {}
        for k, v in state_dict.get("growth", {}).items():
            self.growth[k] = GrowthPeak()
            self.growth[k].load_state_dict(v)
        self.last_change = {k: (int(s), float(c)) for k, (s, c) in state_dict.get("last_change", {}).items()}

    progress_bar_scalars = ("n_directions",)  # per layer, shown on the progress bar after each probe

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
                "weight in the heaviest clusters and directions carrying 99% of it": [
                    "Multiline", [rf"{p}.*/(largest_cluster|top2|top4)_norm_share$",
                                  rf"{p}.*/n_directions_(weighted|random)$"]
                ],
                "relative change from init (initial stage)": ["Multiline", [rf"{p}.*/relative_change$"]],
                "amplitude growth ‖W‖/‖W_0‖ and growth rates": [
                    "Multiline", [rf"{p}.*/norm_ratio$", rf"{p}.*/log_(norm|change)_rate$"]
                ],
                "weight norm": ["Multiline", [rf"{p}.*/weight_norm$"]],
                # a step number and a neuron count: apart, each on its own scale
                "end of the initial stage (step)": ["Multiline", [rf"{p}.*/initial_stage_end$"]],
                "dead neurons": ["Multiline", [rf"{p}.*/dead_neurons$"]],
            }
        }

    # ------------------------------------------------------------------ layers
    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_strategy(trainer, type(self).__name__, reads_weights=True)
        candidates = module_names(pl_module, NEURON_LAYERS)
        if self.layer_spec == "auto":
            if len(candidates) < 2:
                raise ValueError(
                    f"layers='auto' watches every Linear and Conv layer but the last one (the output), and "
                    f"{type(pl_module).__name__} has {len(candidates)} Linear/Conv layer(s): "
                    f"{', '.join(map(repr, candidates)) or '(none)'}; name the layers to watch with layers=[...]."
                )
            self.layers = candidates[:-1]
        modules = dict(pl_module.named_modules())
        for name in self.layers:
            if name not in modules or not name:
                raise ValueError(f"No module named {name!r} in {type(pl_module).__name__}. Linear/Conv modules: "
                                 f"{', '.join(map(repr, candidates)) or '(none)'}.")
            try:
                width = neuron_count(modules[name])
            except TypeError as err:
                raise TypeError(f"layer {name!r}: {err} Linear/Conv modules: "
                                f"{', '.join(map(repr, candidates)) or '(none)'}.") from None
            if width < 2:
                raise ValueError(
                    f"layer {name!r} has {width} neuron; condensation compares the directions of at "
                    f"least 2 neurons. Linear/Conv modules: {', '.join(map(repr, candidates))}."
                )
            if width > self.max_neurons:
                self.warn_once(
                    f"sampled-{name}",
                    f"layer {name!r} has {width} neurons > max_neurons={self.max_neurons}: its "
                    f"directions, clusters and ranks are measured on a fixed sample of {self.max_neurons} neurons "
                    f"(seed {self.seed}); weight_norm and relative_change use the whole layer.",
                )

    def _layer(self, pl_module: nn.Module, name: str) -> nn.Module:
        return resolve_module(pl_module, name)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        for name in self.layers:  # a resumed run keeps the W_0 restored from its checkpoint
            if name not in self.initial_weights:
                self.initial_weights[name] = neuron_weights(self._layer(pl_module, name), trainer)[0].cpu().clone()

    # ------------------------------------------------------------------ the probe
    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeResult:
        report = ProbeResult()
        for name in self.layers:
            weight, bias = neuron_weights(self._layer(pl_module, name), trainer)  # (m, d), (m,): whole, never a shard
            if not all_finite(weight) or (bias is not None and not all_finite(bias)):
                raise ValueError(f"layer {name!r} has NaN or inf weights at step {self.step}; its condensation is "
                                 "undefined (did training diverge?)")
            stats = condensation_stats(
                weight, bias, self.initial_weights.get(name), threshold=self.threshold, signed=self.signed,
                max_neurons=self.max_neurons, seed=self.seed, order=self.heatmap_order,
            )
            self.last_stats[name] = stats
            report.scalars.update({f"{name}/{k}": v for k, v in stats.scalars().items()})
            report.scalars.update({f"{name}/{k}": v for k, v in self._rates(name, stats).items()})
            end = self._stage_end(name, stats)
            if end is not None and name not in self.stage_end:
                self.stage_end[name] = end
                report.scalars[f"{name}/initial_stage_end"] = float(end)
            if self.render_images:
                self._pictures(report, name, stats)
                if weight.shape[1] == 1:
                    self._orientation_picture(report, trainer, pl_module, name, weight, bias)
        if self.render_images:
            report.texts["layers"] = self._table()
        return report

    def _rates(self, name: str, stats: CondensationStats) -> dict[str, float]:
        """log_norm_rate (fed to the stage detector) and log_change_rate since the previous probe."""
        out: dict[str, float] = {}
        if stats.norm_ratio is not None:
            rate = self.growth.setdefault(name, GrowthPeak(self.stage_threshold)).update(self.step, stats.norm_ratio)
            if rate is not None:
                out["log_norm_rate"] = rate
        change = stats.relative_change
        if change is not None and change > 0 and math.isfinite(change):
            last = self.last_change.get(name)
            if last is not None and self.step > last[0] and last[1] > 0:
                out["log_change_rate"] = (math.log(change) - math.log(last[1])) / (self.step - last[0])
            if last is None or self.step > last[0]:
                self.last_change[name] = (self.step, change)
        return out

    def _stage_end(self, name: str, stats: CondensationStats) -> int | None:
        if self.stage_by == "norm_growth":
            detector = self.growth.get(name)
            return None if detector is None else detector.end
        if stats.relative_change is not None and stats.relative_change > self.stage_threshold:
            return self.step
        return None

    @drawing()
    def _orientation_picture(self, report: ProbeResult, trainer: pl.Trainer, pl_module: nn.Module, name: str,
                             weight: Tensor, bias: Tensor | None) -> None:
        """Orientation angle of each neuron against its amplitude |a_k|·‖(w_k, b_k)‖ (a 1-D input)."""
        outgoing = self._outgoing(trainer, pl_module, name)
        angle, amplitude = orientation_amplitude(weight, bias, outgoing)
        amp = "|a_k|·‖(w_k, b_k)‖" if outgoing is not None else "‖(w_k, b_k)‖ (no next Linear layer found)"
        report.images[f"{name}/orientation"] = scatter_image(
            angle.cpu().numpy(), amplitude.cpu().clamp_min(1e-300).numpy(),
            f"{name}: neuron orientation vs amplitude, step {self.step}", "orientation atan2(b_k, w_k)", amp,
            logy=True, xticks={"-π": -math.pi, "-π/2": -math.pi / 2, "0": 0.0, "π/2": math.pi / 2, "π": math.pi},
        )

    def _outgoing(self, trainer: pl.Trainer, pl_module: nn.Module, name: str) -> Tensor | None:
        """The weight of the next Linear layer that reads this layer's neurons (registration order), if any; read
        whole (never a shard), like the layer's own weights."""
        names = module_names(pl_module, nn.Linear)
        width = neuron_count(self._layer(pl_module, name))
        for later in names[names.index(name) + 1:] if name in names else []:
            layer = self._layer(pl_module, later)
            if layer.in_features == width:
                return neuron_weights(layer, trainer)[0]
        return None

    @drawing()  # so a time budget knows what pictures cost apart from the measurement
    def _pictures(self, report: ProbeResult, name: str, stats: CondensationStats) -> None:
        order = stats.order
        analysed = len(stats.neuron_indices)
        sampled = f", {analysed} of {stats.n_neurons} neurons" if stats.sampled else ""
        report.images[f"{name}/cosine_heatmap"] = heatmap_image(
            stats.cosine[order][:, order].numpy(),
            f"{name}: cos(u_k, u_j), step {self.step}\n{stats.n_directions} directions, "
            f"{stats.n_directions_weighted} carrying 99% of the norm "
            f"(random: {stats.n_directions_random:.3g}){sampled}",
            vmin=-1.0, vmax=1.0, cmap="RdBu_r", xlabel=f"neuron (ordered by {self._order_name})",
            ylabel=f"neuron (ordered by {self._order_name})", colorbar_label="cosine",
        )
        alive = stats.labels >= 0
        cos = stats.cosine[alive][:, alive]  # (m_alive, m_alive)
        iu = torch.triu_indices(len(cos), len(cos), offset=1)
        if iu.shape[1]:
            report.histograms[f"{name}/pairwise_cosines"] = cos[iu[0], iu[1]].float()

    @property
    def _order_name(self) -> str:
        return "leading eigenvector" if self.heatmap_order == "eigenvector" else "cluster"

    def _table(self) -> str:
        rows = []
        for name in self.layers:
            s = self.last_stats.get(name)
            if s is None:
                continue
            rows.append([
                name, f"{len(s.neuron_indices)} / {s.n_neurons}", s.n_directions, s.n_directions_weighted,
                s.n_directions_random, s.largest_cluster_share, s.largest_cluster_norm_share,
                s.effective_rank, s.stable_rank, s.norm_ratio if s.norm_ratio is not None else "-",
                s.relative_change if s.relative_change is not None else "-", self.stage_end.get(name, "-"),
                s.dead_neurons,
            ])
        return markdown_table(
            ["layer", "neurons analysed", "n_directions", "n_directions (99% of norm)", "random baseline",
             "largest share", "largest norm share", "effective rank", "stable rank", "norm ratio",
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
