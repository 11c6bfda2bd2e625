"""The base callback every monitor is built on: schedule, probe data, eval/no-grad, logging, triggers, state.

A subclass sets ``name``, validates its model-specific arguments in :meth:`Monitor.check_model`, and implements
:meth:`Monitor.measure`, which turns the model (and ``self.probe_set``) into a :class:`Report`. Everything else —
when to probe, running the probe safely, publishing scalars / pictures / text, stopping, resuming — lives here.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_probes.monitors import _loggers, _progress
from lightning_probes.monitors._cost import CostModel, TrainingClock, training_clock, warm_up
from lightning_probes.monitors._failures import FailureLog
from lightning_probes.monitors._run_logs import History, TextCache, mark_restart
from lightning_probes.monitors.trial import trial_probe
from lightning_probes.precision import probe_precision
from lightning_probes.probe_set import ProbeSet, Source, check_forward, probing
from lightning_probes.schedules import Clock, Schedule, as_schedule, log_spaced
from lightning_probes.spawn import is_spawned_worker, new_token, receive_from_worker, send_to_launcher
from lightning_probes.tensorboard import has_matplotlib, merge_layouts, write_layout_once
from lightning_probes.triggers import Trigger
from lightning_probes.weights import check_strategy

__all__ = ["Monitor", "Report"]


@dataclass
class Report:
    """What one probe produced. Scalars go to every logger and to ``trainer.callback_metrics``; images
    ((H, W, 3) uint8), histograms and markdown texts go to TensorBoard on rank 0. Keys are relative:
    the monitor prefixes them with ``probes/<monitor>/``."""

    scalars: dict[str, float] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: dict[str, Tensor | np.ndarray] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


class Monitor(Callback):
    """Base class of all probes: runs :meth:`measure` on a schedule during ``fit`` and publishes the result.

    Args:
        schedule: when to probe — a :class:`~lightning_probes.schedules.Schedule` (``every(n)``, ``log_spaced()``,
            ``budget(0.05)``) or an int ``n`` for ``every(n)``; evaluated on ``trainer.global_step``.
        probe_data: the fixed samples to look at: ``"train"`` / ``"val"`` / ``"test"`` (the first ``max_samples`` of
            the fit's loader), tensors ``x`` or ``(x, y)``, a mapping of tensors, a Dataset or a DataLoader; samples
            may be tensors, tuples, lists or mappings (e.g. a tokenizer's ``input_ids`` / ``attention_mask`` /
            ``labels``), nested. See :class:`~lightning_probes.probe_set.ProbeSet`.
        max_samples: size of the probe set.
        batch_size: batch size of the probe's forward passes.
        triggers: stop conditions on this monitor's scalars (:class:`~lightning_probes.triggers.StopWhen`, ...).
        on_error: ``"warn"`` (a failed probe is reported once per kind of error and training goes on; the next due
            step tries again; under DDP a probe that fails on one rank is skipped on every rank) or ``"raise"``.
        at_start: also probe before the first optimizer step (step 0).
        at_end: also probe when training ends (if the last step was not probed already).
        images_every: render pictures and histograms on every ``images_every``-th probe (and the last); they cost
            more than scalars, so they get a sparser cadence (text tables go out on every probe). 0 turns them off.
            Under a ``budget`` schedule pictures are paid from the budget too: due pictures wait for a probe the
            budget can afford them on (never the one before the first step).
        name: the monitor's name: its tags are ``probes/<name>/...`` and its dashboard section ``probes/<name>``
            (letters, digits, ``_``, ``-``, ``.``). Default: the class's name (``spectrum``, ``condensation``, ...);
            when two attached monitors of one class both use the default, each gets the class's name followed by
            the arguments that tell them apart (``spectrum_head_a`` and ``spectrum_head_b`` for two heads). Two
            attached monitors that would write the same tags are refused at setup.
        forward: hook ``(module, inputs) -> model output`` for models the call rule does not fit (``inputs``: the
            probe batch with its targets held out), e.g. ``lambda m, b: m(**b).logits``; or its import path
            ``"pkg.mod.fn"`` (for YAML). Default: ``module(x)`` for a tensor, ``module(**inputs)`` for a mapping.
        targets: hook ``batch -> targets`` (or its import path). Default: the second element of a tuple, the
            ``target_key`` of a mapping.
        target_key: the key of the targets in mapping batches (default: the first of ``"labels"``, ``"label"``,
            ``"y"``, ``"target"`` present); it is held out of the model's inputs.

    Before the first training step every monitor runs its whole probe once on a few probe samples (a trial probe:
    nothing is logged, counted or kept, no RNG is consumed), so a monitor that cannot run on the model fails at fit
    start with the reason instead of skipping every probe.
    """

    name: str = "monitor"  # the class's default name; an instance's is set from name= (or derived at setup)
    needs_probe_data: ClassVar[bool] = True
    needs_grad: ClassVar[bool] = False
    # the scalars shown among the progress bar's metrics after each probe (a name, or a per-layer name's last part)
    progress_bar_scalars: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        schedule: Schedule | int | None = None,
        probe_data: Source = "train",
        max_samples: int = 512,
        batch_size: int = 256,
        triggers: Sequence[Trigger] = (),
        on_error: Literal["warn", "raise"] = "warn",
        at_start: bool = True,
        at_end: bool = True,
        images_every: int = 5,
        forward: Callable[[Any, Any], Any] | str | None = None,
        targets: Callable[[Any], Any] | str | None = None,
        target_key: str | None = None,
        name: str | None = None,
    ) -> None:
        self.schedule = as_schedule(log_spaced(per_decade=8, max_interval=500) if schedule is None else schedule)
        self._state_key: tuple[Schedule, str] | None = None
        self.probe_set = ProbeSet(probe_data, max_samples, batch_size, forward=forward, targets=targets,
                                  target_key=target_key) if self.needs_probe_data else None
        self.trial_probe = False  # True while measure() runs the fit-start trial probe (see _trial_probe)
        self._tried = False
        triggers = list(triggers)
        for trig in triggers:
            if not isinstance(trig, Trigger):
                raise TypeError(f"triggers must be Trigger objects such as StopWhen(...), got {type(trig).__name__}.")
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be 'warn' or 'raise', got {on_error!r}.")
        if not isinstance(images_every, int) or images_every < 0:
            raise ValueError(f"images_every must be a non-negative integer, got {images_every!r}.")
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
            raise ValueError(f"name must be a non-empty string of letters, digits, '_', '-' and '.', got {name!r} "
                             "(it becomes the tag prefix probes/<name>/).")
        self._explicit_name = name
        if name is not None:
            self.name = name
        self.triggers = triggers
        self.on_error = on_error
        self.at_start, self.at_end = at_start, at_end
        self.images_every = images_every
        self.clock = Clock()
        self._spawn_token = new_token()  # names the state a ddp_spawn worker sends back (see lightning_probes.spawn)
        self._ran_hooks = False  # set at setup: this copy runs the fit (never true in a ddp_spawn launcher)
        self._silent = False  # under fast_dev_run: no probe
        self.history: History = History()  # bounded: recent probes in full, older ones thinned (_run_logs.py)
        self.stop_reason: str | None = None
        self.failures = 0
        self.failure_log = FailureLog()
        self._texts = TextCache()  # a text table is written only when it changed
        self._resumed = False  # the fit was restored from a checkpoint: mark the restart for TensorBoard
        self.render_images = False  # set before each measure(): are pictures due on this probe?
        self._pictures_pending = False  # pictures were due but the time budget could not pay for them yet
        self.cost_model = CostModel()  # what the next probe is expected to cost (measurement and pictures apart)
        self.step = -1  # the global step of the probe being measured
        self._warned: set[str] = set()
        self._train_base = 0.0
        self._training: TrainingClock | None = None  # the fit's training clock, shared by all its monitors
        self._sinks: list[_loggers.Sink] = []  # the attached loggers that take pictures and text (rank 0)

    # ------------------------------------------------------------------ what a subclass provides
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Report:
        """Run the measurement (in eval mode, under ``no_grad`` unless ``needs_grad``) and return a Report."""
        raise NotImplementedError

    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validate names of layers etc. against the model at setup; raise a clear error listing what exists."""

    def min_probe_samples(self, pl_module: pl.LightningModule) -> int:
        """The fewest probe samples this monitor can work with."""
        return 1

    def dashboard(self) -> dict[str, dict[str, list]]:
        """This monitor's charts for the merged custom-scalars layout: ``{category: {title: ["Multiline", [re]]}}``."""
        return {f"probes/{self.name}": {"all": ["Multiline", [f"{self.prefix}.*"]]}}

    def cheaper(self) -> str | None:
        """Make the following probes cheaper (fewer samples, units, players), when a time budget cannot afford them
        for long. Returns what changed, in a few words ("8 samples instead of 16"), or None when the probe cannot
        get cheaper (the default: the base knows no size to reduce). Called at most once per probe."""
        return None

    def cost_summary(self) -> str:
        """One line: how many probes this monitor made and their cost as a share of training time (the final
        probe's apart)."""
        clock = self.clock
        share = clock.probe_seconds / clock.train_seconds if clock.train_seconds > 0 else float("nan")
        final = "" if self.cost_model.final_seconds is None else f", the final-state probe {self.cost_model.final_seconds:.2f} s"
        return (f"[{self.name}] {clock.n_probes} probes, {clock.probe_seconds:.2f} s = {share:.1%} of training time "
                f"({clock.train_seconds:.1f} s){final}")

    def summary(self) -> str:
        """A few lines on what this monitor saw, for the end of a run."""
        if not self.history:
            return f"[{self.name}] no successful probe ({self.failures} failed)."
        step, scalars = self.history[-1]
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(scalars.items())[:8])
        return f"[{self.name}] {self.history.n_seen} probes; at step {step}: {shown}"

    def failure_summary(self) -> str:
        """Lines on this monitor's failed probes (count and last messages); empty when none failed. Every
        ``summary()`` ends with them (a subclass's own ``summary`` too: see ``__init_subclass__``)."""
        return "\n".join(self.failure_log.lines(self.name))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "summary" in cls.__dict__:  # a subclass's summary() lists the failures too, without repeating the call
            cls.summary = _with_failures(cls.__dict__["summary"])  # type: ignore[method-assign]

    def state_key_fields(self) -> dict[str, Any]:
        """Arguments that tell two instances of this monitor apart (for ``state_key``)."""
        return {}

    # ------------------------------------------------------------------ public helpers
    @property
    def history(self) -> History:
        """(step, scalars) of every successful probe (older ones thinned, see ``History``). After a ``ddp_spawn`` fit, the launching process's monitor
        takes rank 0's state (history, clock, triggers, stop reason, its own state) the first time this is read."""
        if not self._ran_hooks:
            state = receive_from_worker(self._spawn_token)
            if state is not None:
                self.load_state_dict(state)
        return self._history

    @history.setter
    def history(self, value: Sequence[tuple[int, dict[str, float]]]) -> None:
        # a plain list (a test, a user's own bookkeeping) becomes a History, so state_dict and thinning still work
        self._history = value if isinstance(value, History) else History(value)

    @property
    def prefix(self) -> str:
        return f"probes/{self.name}/"

    @property
    def state_key(self) -> str:
        # Lightning reads state_key on every hook call of every step (it names the profiler section), so it is built
        # once per schedule rather than each time; the other fields are constructor arguments and never change.
        # An explicit name= is part of it (two monitors that differ only by name keep apart states); a default
        # name is not, so checkpoints written before name= existed still load
        cached = self._state_key
        if cached is None or cached[0] is not self.schedule:
            named = {} if self._explicit_name is None else {"name": self._explicit_name}
            cached = self._state_key = (self.schedule, self._generate_state_key(schedule=repr(self.schedule),
                                                                                 **self.state_key_fields(), **named))
        return cached[1]

    @staticmethod
    def rank_share(trainer: pl.Trainer) -> tuple[int, int]:
        """(rank, world size): a monitor with sum-reducible statistics probes only its rank's share."""
        return trainer.global_rank, trainer.world_size

    @staticmethod
    def rank_local(trainer: pl.Trainer, work: Callable[[], Any]) -> Any:
        """Run rank-local work (forward passes, accumulation) before a collective step such as a metric sync.

        All ranks agree whether any of them failed before anyone enters the collective, so a probe that fails on
        one rank fails on all of them instead of leaving the others waiting in the sync forever. (A probe that
        fails on one rank outside ``rank_local`` is agreed on by the base class after :meth:`measure`; its
        agreement meets the others' first ``rank_local``, so everything before the first one is covered too.)
        """
        error: Exception | None = None
        result = None
        try:
            result = work()
        except Exception as err:  # re-raised below, after the ranks have agreed
            error = err
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(error is not None, all=False):
            error = error or RuntimeError(_FAILED_ELSEWHERE)
            error._lp_ranks_agreed = True  # type: ignore[attr-defined]  # _probe must not ask the ranks again
            raise error
        if error is not None:
            raise error
        return result

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(f"[lightning-probes/{self.name}] {message}")

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._ran_hooks = True
        if stage == "fit":
            check_strategy(trainer, type(self).__name__)  # DeepSpeed: refused, its parameters are partitioned

            from lightning_probes.monitors.group import assign_names  # here, not on top: group.py imports this

            assign_names(trainer)  # distinct default names, and no two monitors writing the same tags
            self.check_model(trainer, pl_module)
            # like ModelCheckpoint and EarlyStopping: a fast_dev_run checks that the monitor fits the model (above, and
            # at fit start) but probes and publishes nothing
            self._silent = bool(trainer.fast_dev_run)
            if self._silent:
                rank_zero_info(f"[lightning-probes/{self.name}] fast_dev_run: the model was checked, no probe runs.")

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._resumed = True  # the fit resumes from a checkpoint: on_train_start marks the restart

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # every point logged before the checkpoint reaches the disk with it: a run killed later loses none of them
        self._flush(trainer)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # everything done here (probe set, checks, warm-up) is set-up, not training: out of every monitor's clock
        self._training = training_clock(trainer, self)
        began = time.perf_counter()
        self._fit_start(trainer, pl_module)
        self._sinks = _loggers.picture_sinks(trainer, announce=self.images_every > 0)
        warm_up(pictures=bool(self._sinks) and self.images_every > 0)
        self.clock.total_steps = _planned_steps(trainer)
        self._train_base = self.clock.train_seconds
        self._training.exclude(time.perf_counter() - began)

    def _fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe_set is not None:
            self.probe_set.materialise(trainer, pl_module.device)
            need = self.min_probe_samples(pl_module)
            if len(self.probe_set) < need:
                raise ValueError(
                    f"{type(self).__name__} needs at least {need} probe samples, the probe set has "
                    f"{len(self.probe_set)}; raise max_samples or pass more probe_data."
                )
            check_forward(self.probe_set, pl_module, type(self).__name__)
        self._tried = False
        self._write_dashboard(trainer)
        self._texts.clear()
        if self._resumed:  # TensorBoard hides what the killed run logged after the checkpoint (_run_logs.py)
            self._resumed = False
            mark_restart(_tensorboard_writers(trainer), trainer.global_step)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after every monitor's own on_train_start (a subclass prepares itself after the base's), before any step
        if not self._tried:
            self._tried = True
            started = time.perf_counter()
            trial_probe(self, trainer, pl_module)
            self._training.exclude(time.perf_counter() - started)  # a check, not training: outside every clock

    def trial_view(self, indices: Tensor) -> None:
        """Restrict sample-aligned state of the monitor to the probe samples ``indices`` for the fit-start trial
        probe (the base swaps the probe set; a subclass with per-sample data, e.g. concept masks, cuts it here).
        Everything is restored afterwards."""

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.at_start and trainer.global_step == 0 and self.clock.last_step != 0:
            self._probe(trainer, pl_module, 0)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # hot path of every training step: decide and return
        step = trainer.global_step
        if step == self.clock.last_step:
            return
        if not self.schedule.deterministic:
            self.clock.train_seconds = self._train_seconds()
        due = self.schedule(step, self.clock)
        if not self.schedule.deterministic and trainer.world_size > 1:
            due = bool(trainer.strategy.broadcast(due, src=0))  # a time-based decision must be the same everywhere
        if due:
            self._probe(trainer, pl_module, step)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_end and trainer.global_step != self.clock.last_step:
            self._probe(trainer, pl_module, trainer.global_step, final=True)
        self._flush(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and is_spawned_worker(trainer):
            send_to_launcher(self._spawn_token, self.state_dict(), trainer)  # the launcher's copy saw nothing

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._flush(trainer)  # keep every probe point written before the crash

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "clock": asdict(self.clock),
            "history": self.history.state_dict(),
            "triggers": [t.state_dict() for t in self.triggers],
            "stop_reason": self.stop_reason,
            "failures": self.failures,
            "failure_log": self.failure_log.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.clock = Clock(**state_dict["clock"])
        self.history = History.from_state(state_dict.get("history", []))
        for trig, st in zip(self.triggers, state_dict.get("triggers", [])):
            trig.load_state_dict(st)
        self.stop_reason = state_dict.get("stop_reason")
        self.failures = int(state_dict.get("failures", 0))
        self.failure_log.load_state_dict(state_dict.get("failure_log"), total=self.failures)

    # ------------------------------------------------------------------ the probe
    def _train_seconds(self) -> float:
        return self._train_base + (self._training.seconds() if self._training is not None else 0.0)

    def _probe(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, final: bool = False
    ) -> None:
        if self._silent:
            return
        token = self.cost_model.start()
        self.step = step
        # pictures only where a logger takes them: drawn for no one, they cost a spectrum probe 1.1 s instead of 13 ms
        due = bool(self._sinks) and self.images_every > 0 and (final or self._pictures_pending
                                                               or self.clock.n_probes % self.images_every == 0)
        # the final state's pictures are drawn whatever the budget says (they are the ones people look at)
        self.render_images = due and (final or self.schedule.affords(self.cost_model.picture_seconds, self.clock))
        self._pictures_pending = due and not self.render_images
        report: Report | None = None
        error: Exception | None = None
        # under DDP a probe skipped because another rank failed must leave no trace here either
        snapshot = self.state_dict() if trainer.world_size > 1 else None
        try:
            # in the precision the model trains in: autocast under "bf16-mixed" (see lightning_probes.precision)
            with _progress.probing_status(trainer, self.name, self.cost_model.expected(self.render_images)), \
                    probing(pl_module, grad=self.needs_grad), probe_precision(trainer):
                report = self.measure(trainer, pl_module)
            _check_scalars(report)
        except Exception as err:  # a failed measurement must not kill someone's training run
            if self.on_error == "raise":
                raise
            error = err
        # a probe that failed on any rank is skipped on every rank, so the ranks keep the same history and state.
        # Unless they already agreed in rank_local, they agree here — and a rank that failed before its first
        # rank_local meets, with this collective, the others waiting in theirs (no hang)
        agree = trainer.world_size > 1 and not _ranks_agreed(error)
        if agree and trainer.strategy.reduce_boolean_decision(error is not None, all=False):
            error = error or RuntimeError(_FAILED_ELSEWHERE)
        if error is not None:
            if snapshot is not None:
                # measure() may have moved this rank's state on (previous interactions, formulas, class means):
                # put it back, so every rank carries the same state into the next probe
                self.load_state_dict(snapshot)
            self._record_failure(trainer, step, error)
            report = None
        if report is not None:
            self.failure_log.succeeded()
            self.history.append((step, dict(report.scalars)))
            self._publish(trainer, report, step)
            # texts are cheap and go out on every probe; a monitor adds pictures only when render_images is set
            self._publish_artefacts(trainer, report, step)
            _progress.show_key_scalars(trainer, _progress.key_scalars(self.name, self.progress_bar_scalars,
                                                                      report.scalars))
        if not final:
            self._decide_stop(trainer, report, step)
        self._book(trainer, token, step, final)

    def _book(self, trainer: pl.Trainer, token: tuple[float, float], step: int, final: bool) -> None:
        """Account for a finished probe: the cost model learns from it, the shared training clock leaves it out,
        and a budget that cannot afford the next probe for long gets a cheaper one (said once)."""
        timing = self.cost_model.stop(token)
        self.cost_model.record(timing, drew_pictures=self.render_images, final=final)
        pictures_next = bool(self._sinks) and self.images_every > 0 and (
            self._pictures_pending or (self.clock.n_probes + 1) % self.images_every == 0)
        self.cost_model.update_clock(self.clock, timing, pictures_next, step)
        if self._training is not None:
            self._training.exclude(timing.total)
        self.clock.train_seconds = self._train_seconds()
        starved = not final and self.schedule.starved(step, self.clock)
        if not final and not self.schedule.deterministic and trainer.world_size > 1:
            starved = bool(trainer.strategy.broadcast(starved, src=0))  # every rank probes the same size
        if starved:
            change = self.cheaper()
            if change:
                self.cost_model.cheaper()
                self.clock.next_probe_seconds = self.cost_model.expected(pictures_next)
                if "cheaper" not in self._warned:
                    self._warned.add("cheaper")
                    rank_zero_info(f"[lightning-probes/{self.name}] the time budget cannot afford this probe for "
                                   f"long: probing cheaper ({change}) from step {step} on.")

    def _record_failure(self, trainer: pl.Trainer, step: int, error: Exception) -> None:
        """Count, log (``failed_probes`` scalar, ``failures`` text) and warn a failed probe (_failures.py)."""
        self.failures += 1
        streak = self.failure_log.record(step, error)
        self.warn_once(
            type(error).__name__,
            f"probe at step {step} failed and was skipped ({type(error).__name__}: {error}); training goes on and "
            "the next due step tries again. Pass on_error='raise' to stop on it.",
        )
        if streak:
            rank_zero_warn(f"[lightning-probes/{self.name}] {self.failure_log.in_a_row} probes in a row have failed "
                           f"(the last at step {step}: {type(error).__name__}: {error}); {self.failures} in all. This "
                           f"monitor is not measuring; see {self.prefix}failures.")
        metrics = {self.prefix + "failed_probes": float(self.failures)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        _loggers.write_text(self._sinks, self.prefix + "failures", self.failure_log.table(), step)

    def _publish(self, trainer: pl.Trainer, report: Report, step: int) -> None:
        metrics = {self.prefix + k: float(v) for k, v in report.scalars.items()}
        for logger in trainer.loggers:  # every logger, every probe point (not thinned by log_every_n_steps)
            logger.log_metrics(metrics, step=step)
        # callback_metrics is what EarlyStopping and ModelCheckpoint read (and any callback). Written directly
        # rather than through pl_module.log: that costs ~0.35 ms per scalar (5.3 ms for the spectrum's 15, 40%
        # of its measurement), would send a second, thinned copy to the loggers, and is refused in
        # on_train_end, where the final probe runs. Lightning keeps this dict for the whole fit.
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})

    def _publish_artefacts(self, trainer: pl.Trainer, report: Report, step: int) -> None:
        # to every logger that takes pictures / text, each through its own API (see _loggers.py); a text table that
        # has not changed since it was last written is not written again
        texts = {key: text for key, text in report.texts.items() if self._texts.changed(None, key, text)}
        if report.images or report.histograms or texts:
            _loggers.publish(self._sinks, self.prefix, report.images, report.histograms, texts, step)

    def _decide_stop(self, trainer: pl.Trainer, report: Report | None, step: int) -> None:
        if not self.triggers:
            return
        reason = None
        if report is not None:
            for trig in self.triggers:  # every trigger sees every probe, so patience counts stay right
                why = trig.check(step, report.scalars, self.prefix)
                reason = reason or why
        # identical on every rank: a stop decided by any rank stops all of them (and is always reached, even
        # when this rank's probe failed, so no rank waits for another)
        stop = trainer.strategy.reduce_boolean_decision(reason is not None, all=False)
        if stop:
            self.stop_reason = reason or f"a trigger fired on another rank at step {step}"
            trainer.should_stop = True
            rank_zero_info(f"[lightning-probes/{self.name}] stopping training: {self.stop_reason}")
            _loggers.write_text(self._sinks, self.prefix + "stop_reason", self.stop_reason, step)

    def _write_dashboard(self, trainer: pl.Trainer) -> None:
        writers = _tensorboard_writers(trainer)
        if not writers:
            return
        from lightning_probes.monitors.group import attached_monitors  # here, not on top: group.py imports this

        monitors = attached_monitors(trainer)
        layout = merge_layouts(_named_dashboard(m) for m in monitors)  # one layout for all monitors of the Trainer
        for writer in writers:
            write_layout_once(writer, layout)
        if self.images_every and not has_matplotlib():
            self.warn_once("no-matplotlib", "matplotlib is not installed, so pictures are skipped "
                                            "(pip install matplotlib); scalars and text still flow.")
            self.images_every = 0

    def _flush(self, trainer: pl.Trainer) -> None:
        for sink in self._sinks:
            sink.flush()


_FAILED_ELSEWHERE = "the probe failed on another rank (see its warning); skipped on all ranks"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _with_failures(summary: Callable[[Monitor], str]) -> Callable[[Monitor], str]:
    """``summary`` followed by the monitor's failure lines, added once by the outermost summary() call (a
    subclass's summary that calls ``super().summary()`` does not get them twice)."""
    if getattr(summary, "_lp_with_failures", False):
        return summary

    @functools.wraps(summary)
    def wrapped(self: Monitor) -> str:
        if getattr(self, "_in_summary", False):
            return summary(self)
        self._in_summary = True
        try:
            text = summary(self)
        finally:
            self._in_summary = False
        extra = self.failure_summary()
        return f"{text}\n{extra}" if extra else text

    wrapped._lp_with_failures = True  # type: ignore[attr-defined]
    return wrapped


Monitor.summary = _with_failures(Monitor.summary)  # type: ignore[method-assign]


def _named_dashboard(monitor: Monitor) -> dict[str, dict[str, list]]:
    """The monitor's dashboard with its class's section ``probes/<class name>`` renamed ``probes/<name>`` (the
    charts' tag patterns already use the monitor's prefix), so two monitors of one class get a section each."""
    layout = monitor.dashboard()
    default = f"probes/{type(monitor).name}"
    if monitor.name == type(monitor).name or default not in layout:
        return layout
    return {(f"probes/{monitor.name}" if category == default else category): charts
            for category, charts in layout.items()}


def _ranks_agreed(error: BaseException | None) -> bool:
    """Whether the ranks already agreed on this failure in :meth:`Monitor.rank_local` (also when re-raised as
    another exception)."""
    while error is not None:
        if getattr(error, "_lp_ranks_agreed", False):
            return True
        error = error.__cause__ or error.__context__
    return False


def _planned_steps(trainer: pl.Trainer) -> int | None:
    """The optimizer steps this fit is planned to run (``max_steps``, or Lightning's estimate from the epochs and
    the loader's length); None when unknown or unbounded."""
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # an iterable loader without a length, a strategy that cannot tell yet
        return None
    return int(total) if isinstance(total, (int, float)) and np.isfinite(total) and total > 0 else None


def _tensorboard_writers(trainer: pl.Trainer) -> list[Any]:
    """The SummaryWriters of the trainer's TensorBoard loggers, on global rank 0 only."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def _check_scalars(report: Report) -> None:
    if not isinstance(report, Report):
        raise TypeError(f"measure() must return a Report, got {type(report).__name__}.")
    for key, value in report.scalars.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"scalar {key!r} must be a Python float, got {type(value).__name__}.")
