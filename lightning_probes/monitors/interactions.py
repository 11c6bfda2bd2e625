"""InteractionMonitor: AND-OR interactions of the output and of each layer, and how they change over training.

Cheng et al., ICML 2024 (arXiv 2409.08712); every formula lives in :mod:`lightning_probes.measures.interactions`.
This file runs the model on the 2^n masked versions of a few probe samples, fits the layer probes, and publishes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_probes.measures.interactions import (
    AndOrDecomposition,
    LinearProbe,
    Players,
    count_by_order,
    fit_linear_probe,
    interaction_change,
    log_odds,
    masked_outputs,
    merge_first_order,
    salient_iou,
    salient_mask,
    sparse_and_or,
    strongest_interactions,
)
from lightning_probes.monitors._checks import check_class_labels
from lightning_probes.monitors.base import Monitor, Report
from lightning_probes.probe_set import capture, probing, resolve_module
from lightning_probes.tensorboard import bar_image, drawing, line_image, markdown_table

__all__ = ["InteractionMonitor"]

OUTPUT = "output"


class InteractionMonitor(Monitor):
    """Salient AND-OR interactions the network encodes, their orders, what emerges and what is forgotten over
    training, and how each layer's interactions compare with the output's (SCIENCE.md section 3).

    At each probe the first ``num_samples`` probe samples are masked in all 2^n ways (players outside T set to the
    baseline, by default the probe-set mean), the model is run on them, and v = log-odds of the true class is
    decomposed into sparse AND-OR interactions (γ and the noise |δ| ≤ κ·|v(N) - v(∅)| learned, one batched
    problem for all samples and layers). For each named layer a linear softmax probe is fitted on the frozen
    layer features of the whole probe set; its log-odds on the masked inputs give v^(l).

    Logs under ``probes/interactions/``: ``n_salient`` (salient interactions per sample, |I| > τ·max|I|,
    first-order OR counted with first-order AND), ``n_salient_order_<k>`` (k = 1..n), ``mean_order``,
    ``emerged`` / ``forgotten`` (vs the previous probe: new / (overlap + new) and forget / (overlap + forget) of the
    strength-weighted terms, i.e. the share of today's salient strength that is new and of the previous one that
    is gone), ``iou_previous``, ``objective`` (mean Σ|I|), ``clamped_fraction`` (masked outputs whose |v| hit the
    clamp) and per layer ``<layer>/completeness``, ``<layer>/redundancy`` (mean over orders of the per-order
    ratios vs the output), ``<layer>/iou`` and ``<layer>/probe_accuracy``. Pictures: sorted |I| (sparsity), the
    order histogram, completeness and redundancy per order and layer; text: the strongest interactions of a few
    samples as player sets.

    Every rank computes the same figures (the decomposition is per sample and cheap to repeat).

    Args:
        players: the partition of one input into n players (:class:`~lightning_probes.measures.interactions.Players`,
            e.g. ``ImagePatches((4, 4), (8, 8), select=[...], flatten=True)``).
        layers: module names whose outputs get a linear probe and their own interactions; none: output only.
        num_samples: probe samples whose interactions are extracted (each costs 2^n forward rows).
        tau: salience threshold as a fraction of each sample's max |I|.
        kappa: noise bound as a fraction of |v(N) - v(∅)|.
        max_players: refuse more players than this (2^n masked inputs and subsets per sample).
        baseline: masking value per input element (shape of one sample) or a scalar; default the probe-set mean.
        solver_iterations: iteration cap of the batched AND-OR solver.
        forward_batch_size: masked inputs per forward pass (bounds memory).
        probe_l2: L2 weight of the layer probes.
        text_samples: samples shown in the strongest-interactions text.
        top_k: interactions shown per sample.
        **kwargs: the :class:`~lightning_probes.monitors.base.Monitor` arguments (schedule, probe_data,
            max_samples — the probe set the baseline and the layer probes are fitted on, ...).

    Example:
        >>> from lightning_probes.measures.interactions import ImagePatches
        >>> InteractionMonitor(ImagePatches((4, 4), (8, 8), select=[5, 6, 9, 10], flatten=True), schedule=50)
        InteractionMonitor(n=4, layers=[], schedule=every(50, start=0))
    """

    name = "interactions"

    def __init__(
        self,
        players: Players,
        layers: Sequence[str] | None = None,
        num_samples: int = 16,
        tau: float = 0.05,
        kappa: float = 0.04,
        max_players: int = 14,
        baseline: Tensor | float | None = None,
        solver_iterations: int = 1000,
        forward_batch_size: int = 4096,
        probe_l2: float = 1e-3,
        text_samples: int = 3,
        top_k: int = 6,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(players, Players):
            raise TypeError(
                f"players must be a Players partition (e.g. ImagePatches(...), FeatureGroups(...)), got "
                f"{type(players).__name__}."
            )
        if not isinstance(max_players, int) or max_players < 1:
            raise ValueError(f"max_players must be a positive integer, got {max_players!r}.")
        if players.n > max_players:
            raise ValueError(
                f"{players.n} players exceed max_players={max_players}: each probe runs the model on 2^n = "
                f"{2 ** players.n} masked inputs per sample and solves for 2·2^n interactions. Use fewer, larger "
                "players, or raise max_players if you accept the cost."
            )
        names = list(layers or [])
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"layers must be distinct module names, got {layers!r}.")
        if OUTPUT in names:
            raise ValueError(f"{OUTPUT!r} is reserved for the model output; name the layer module instead.")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        if self.probe_set is not None and num_samples > self.probe_set.max_samples:
            raise ValueError(f"num_samples={num_samples} exceeds max_samples={self.probe_set.max_samples}.")
        if not _real(tau) or not 0 < tau < 1:
            raise ValueError(f"tau is a fraction of the largest |I|, in (0, 1); got {tau!r}.")
        if not _real(kappa) or not 0 <= kappa < 1:
            raise ValueError(f"kappa is a fraction of |v(N) - v(∅)|, in [0, 1); got {kappa!r}.")
        for label, value in (("solver_iterations", solver_iterations), ("forward_batch_size", forward_batch_size),
                             ("text_samples", text_samples), ("top_k", top_k)):
            if not isinstance(value, int) or value < (0 if label == "text_samples" else 1):
                raise ValueError(f"{label} must be a positive integer, got {value!r}.")
        if not _real(probe_l2) or not (probe_l2 >= 0 and math.isfinite(probe_l2)):
            raise ValueError(f"probe_l2 must be a finite number ≥ 0, got {probe_l2!r}.")
        if baseline is not None:
            try:
                base = torch.as_tensor(baseline)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"baseline must be a tensor (one sample's shape), a number or None (the probe-set "
                                f"mean), got {type(baseline).__name__}.") from None
            if base.is_floating_point() and not bool(torch.isfinite(base).all()):
                raise ValueError("baseline holds NaN or Inf; every masked input would be NaN.")
        self.players = players
        self.layers = names
        self.num_samples = num_samples
        self.tau = tau
        self.kappa = kappa
        self.max_players = max_players
        self.baseline = baseline
        self.solver_iterations = solver_iterations
        self.forward_batch_size = forward_batch_size
        self.probe_l2 = probe_l2
        self.text_samples = text_samples
        self.top_k = top_k
        self._previous: dict[str, Tensor] | None = None  # the output's interactions at the previous probe
        # per layer, the per-order completeness / redundancy of the last probe, (n + 1,) each (NaN: no interaction)
        self.last_by_order: dict[str, dict[str, Tensor]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.players.n}, layers={self.layers}, schedule={self.schedule!r})"

    @override
    def state_key_fields(self) -> dict[str, Any]:
        return {"n": self.players.n, "layers": tuple(self.layers), "num_samples": self.num_samples}

    @override
    def dashboard(self) -> dict[str, dict[str, list]]:
        p = self.prefix
        return {
            "probes/interactions": {
                "salient interactions": ["Multiline", [f"{p}n_salient$", f"{p}mean_order$"]],
                "emerged and forgotten": ["Multiline", [f"{p}emerged$", f"{p}forgotten$", f"{p}iou_previous$"]],
                "salient interactions by order": ["Multiline", [f"{p}n_salient_order_[0-9]+$"]],
                "completeness per layer": ["Multiline", [f"{p}.*/completeness$"]],
                "redundancy per layer": ["Multiline", [f"{p}.*/redundancy$"]],
            }
        }

    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name in self.layers:
            resolve_module(pl_module, name)  # lists the module names when missing

    @override
    def min_probe_samples(self, pl_module: pl.LightningModule) -> int:
        return self.num_samples

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        probe = self.probe_set
        if probe.targets is None or probe.targets.is_floating_point() or probe.targets.ndim != 1:
            raise ValueError(
                "InteractionMonitor needs a classification head: probe_data must yield (x, y) with integer class "
                "targets y of shape (N,); v is the log-odds of the true class."
            )
        with probing(pl_module):  # v is the log-odds of the true class: it must be one of the output's classes
            classes = pl_module(probe.inputs[:1].to(pl_module.device)).shape[-1]
        check_class_labels(type(self).__name__, probe.targets, classes, "the model output")
        shape = tuple(self.players.groups.shape)
        if tuple(probe.inputs.shape[1 : 1 + len(shape)]) != shape:
            raise ValueError(
                f"players were built for samples of shape {shape}, but the probe inputs have shape "
                f"{tuple(probe.inputs.shape[1:])}; build them for what the model takes (e.g. flatten=True)."
            )
        if self.baseline is None and not probe.inputs.is_floating_point():
            raise ValueError(f"the probe inputs are {probe.inputs.dtype}: the default baseline (the probe-set mean) "
                             "needs float inputs; for token ids pass the mask token id, e.g. baseline=0.")
        if self.baseline is not None:  # a baseline that does not fit one sample fails here, not at the first probe
            self.players.mask(probe.inputs[:1], torch.ones(1, self.players.n, dtype=torch.bool), self.baseline)

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["previous"] = None if self._previous is None else {k: v.cpu() for k, v in self._previous.items()}
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._previous = state_dict.get("previous")

    # ------------------------------------------------------------------ the measurement
    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Report:
        probe = self.probe_set
        device = pl_module.device
        x_all = probe.inputs.to(device)
        y_all = probe.targets.to(device)
        x, y = x_all[: self.num_samples], y_all[: self.num_samples]
        baseline = x_all.mean(0) if self.baseline is None else self.baseline
        layer_probes = self._fit_layer_probes(pl_module, x_all, y_all)
        games = self._games(pl_module, x, y, baseline, layer_probes)  # source -> v (B, 2^n)
        stacked = torch.cat(list(games.values()))  # (S·B, 2^n): one batched decomposition
        result = sparse_and_or(stacked, self.kappa, max_iter=self.solver_iterations)
        per_source = _split(result, list(games), len(x), self.tau)
        report = Report(scalars=self._scalars(per_source, layer_probes))
        if self.render_images:
            self._pictures(report, per_source)
        return report

    def _fit_layer_probes(self, pl_module: nn.Module, x: Tensor, y: Tensor) -> dict[str, LinearProbe]:
        if not self.layers:
            return {}
        feats: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        with capture(pl_module, {name: "output" for name in self.layers}) as seen:
            for start in range(0, len(x), self.forward_batch_size):
                pl_module(x[start : start + self.forward_batch_size])
                for name in self.layers:
                    feats[name].append(seen[name].flatten(1))
        num_classes = max(int(y.max()) + 1, self._output_width(pl_module, x[:1]))
        return {name: fit_linear_probe(torch.cat(f), y, num_classes, l2=self.probe_l2) for name, f in feats.items()}

    @staticmethod
    def _output_width(pl_module: nn.Module, x: Tensor) -> int:
        out = pl_module(x)
        if not isinstance(out, Tensor) or out.ndim != 2:
            raise ValueError(
                "InteractionMonitor needs a classification head: the model must return logits of shape (B, C), "
                f"got {type(out).__name__}{'' if not isinstance(out, Tensor) else tuple(out.shape)}."
            )
        return out.shape[1]

    def _games(
        self, pl_module: nn.Module, x: Tensor, y: Tensor, baseline: Tensor | float, probes: dict[str, LinearProbe]
    ) -> dict[str, Tensor]:
        with capture(pl_module, {name: "output" for name in self.layers}) as seen:

            def forward(batch: Tensor) -> dict[str, Tensor]:
                out = {OUTPUT: pl_module(batch)}
                out.update({name: probes[name](seen[name].flatten(1)) for name in self.layers})
                return out

            logits = masked_outputs(forward, x, self.players, baseline, self.forward_batch_size)
        games = {}
        clamped = 0
        for source in [OUTPUT, *self.layers]:
            if logits[source].ndim != 3:
                raise ValueError("the model must return logits of shape (B, C) for InteractionMonitor.")
            v = log_odds(logits[source], y)
            clamped += int(v.clamped.sum())
            games[source] = v.values.to(torch.float64)
        total = sum(g.numel() for g in games.values())
        self._clamped_fraction = clamped / total
        if clamped:
            self.warn_once(
                "clamped",
                f"{clamped} of {total} masked outputs have p(true class) within ~1e-7 of 0 or 1 (the network is "
                "saturated or already gets the sample wrong with certainty); their log-odds were clamped to ±16, "
                "so interactions there describe the clamp. See probes/interactions/clamped_fraction.",
            )
        return games

    def _scalars(self, per_source: dict[str, dict[str, Tensor]], probes: dict[str, LinearProbe]) -> dict[str, float]:
        out = per_source[OUTPUT]
        n = self.players.n
        counts = count_by_order(out["mask"]).to(torch.float64)  # (B, n+1)
        total = counts.sum(-1)
        orders = torch.arange(n + 1, dtype=torch.float64)
        scalars = {
            "n_salient": float(total.mean()),
            "mean_order": float((counts * orders).sum() / counts.sum().clamp_min(1)),
            "objective": float(out["objective"].mean()),
            "clamped_fraction": float(self._clamped_fraction),
        }
        for k in range(1, n + 1):
            scalars[f"n_salient_order_{k}"] = float(counts[:, k].mean())
        if self._previous is not None and self._previous["mask"].shape == out["mask"].shape:
            prev = self._previous
            change = interaction_change(
                (prev["i_and"].to(out["i_and"]), prev["i_or"].to(out["i_or"])), (out["i_and"], out["i_or"]),
                prev["mask"].to(out["mask"].device), out["mask"],
            )  # previous probe -> now: the new terms emerged, the forget terms were forgotten
            scalars["emerged"] = _ratio(change.new.sum(), change.overlap.sum())
            scalars["forgotten"] = _ratio(change.forget.sum(), change.overlap.sum())
            scalars["iou_previous"] = _nan_to_num(salient_iou(out["mask"], prev["mask"].to(out["mask"].device)).mean())
        self._previous = {k: out[k].detach().cpu() for k in ("i_and", "i_or", "mask")}
        for name in self.layers:
            layer = per_source[name]
            change = interaction_change((layer["i_and"], layer["i_or"]), (out["i_and"], out["i_or"]),
                                        layer["mask"], out["mask"])
            layer["completeness"] = change.completeness
            layer["redundancy"] = change.redundancy
            self.last_by_order[name] = {
                "completeness": change.completeness.cpu(), "redundancy": change.redundancy.cpu()
            }
            scalars[f"{name}/completeness"] = _nan_to_num(torch.nanmean(change.completeness[1:]))
            scalars[f"{name}/redundancy"] = _nan_to_num(torch.nanmean(change.redundancy[1:]))
            scalars[f"{name}/iou"] = _nan_to_num(salient_iou(layer["mask"], out["mask"]).mean())
            scalars[f"{name}/probe_accuracy"] = float(probes[name].accuracy)
        return scalars

    # ------------------------------------------------------------------ pictures and text
    @drawing()  # so a time budget knows what pictures cost apart from the measurement
    def _pictures(self, report: Report, per_source: dict[str, dict[str, Tensor]]) -> None:
        n = self.players.n
        curves = {}
        for source, parts in per_source.items():
            strength = torch.cat((parts["i_and"][:, 1:], parts["i_or"][:, 1:]), -1).abs()  # (B, 2m - 2)
            ranked = strength.sort(-1, descending=True).values
            ranked = ranked / ranked[:, :1].clamp_min(1e-12)
            rank = np.arange(1, ranked.shape[1] + 1)
            curves[source] = (rank, ranked.mean(0).clamp_min(1e-8).cpu().numpy())
        report.images["sparsity"] = line_image(
            curves, f"sorted |I| / max |I| (mean over samples), step {self.step}", "rank", "relative strength",
            logy=True, logx=True, hlines={f"τ = {self.tau}": self.tau},
        )
        orders = [str(k) for k in range(1, n + 1)]
        report.images["order_histogram"] = bar_image(
            orders, {s: count_by_order(p["mask"])[:, 1:].double().mean(0).tolist() for s, p in per_source.items()},
            f"salient interactions per sample by order, step {self.step}", "count",
        )
        if self.layers:
            for key in ("completeness", "redundancy"):
                report.images[f"{key}_per_order"] = bar_image(
                    orders, {name: torch.nan_to_num(per_source[name][key][1:]).tolist() for name in self.layers},
                    f"{key} per order vs the output, step {self.step}", key,
                )
        report.texts["strongest"] = self._strongest_text(per_source[OUTPUT])

    def _strongest_text(self, out: dict[str, Tensor]) -> str:
        rows = []
        shown = min(self.text_samples, out["i_and"].shape[0])
        tops = strongest_interactions(out["i_and"][:shown], out["i_or"][:shown], self.top_k, self.players.names)
        for sample, top in enumerate(tops):
            for kind, members, value in top:
                rows.append([sample, kind, "{" + ", ".join(members) + "}", len(members), value])
        return markdown_table(["sample", "type", "players", "order", "I(S)"], rows)

    @override
    def summary(self) -> str:
        if not self.history:
            return super().summary()
        step, last = self.history[-1]
        lines = [f"[interactions] at step {step}: {last['n_salient']:.1f} salient interactions per sample "
                 f"(mean order {last['mean_order']:.2f})"]
        for name in self.layers:
            lines.append(f"[interactions] {name}: completeness {last[f'{name}/completeness']:.3f}, "
                         f"redundancy {last[f'{name}/redundancy']:.3f}")
        return "\n".join(lines)


def _split(result: AndOrDecomposition, sources: list[str], per: int, tau: float) -> dict[str, dict[str, Tensor]]:
    """Cut the batched decomposition back into sources; merge singletons and mark salient sets per source."""
    out = {}
    for i, source in enumerate(sources):
        rows = slice(i * per, (i + 1) * per)
        i_and, i_or = merge_first_order(result.i_and[rows], result.i_or[rows])
        out[source] = {
            "i_and": i_and, "i_or": i_or, "mask": salient_mask(i_and, i_or, tau), "objective": result.objective[rows]
        }
    return out


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ratio(part: Tensor, rest: Tensor) -> float:
    total = float(part + rest)
    return float(part) / total if total > 0 else 0.0


def _nan_to_num(value: Tensor) -> float:
    value = float(value)
    return 0.0 if math.isnan(value) else value
