"""The base callback every monitor is built on: its arguments, what a subclass provides, the hooks, the probe.

A subclass sets ``name``, checks the model in :meth:`Monitor.check_model` and turns the model (and ``self.probe_set``)
into a :class:`ProbeResult` in :meth:`Monitor.measure`. Each other job has its module beside this one: the state
(``_state.py``), the run's logs (``_run_logs.py``), end-of-run lines (``_summaries.py``), DDP agreement and rollback
(``_agreement.py``), fit start (``_fit_start.py``), cost and clock (``_cost.py``), the result and its publishing
(``_publish.py``), failed probes (``_failures.py``), triggers and the stop decision (``_stopping.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_probes.monitors import _loggers
from lightning_probes.monitors._agreement import RankWork, agree_on_failure, roll_back, rollback_point
from lightning_probes.monitors._attached import assign_names, attached_monitors
from lightning_probes.monitors._cost import CostModel, TrainingClock, book, pictures_due, probe_due, training_clock
from lightning_probes.monitors._failures import attempt, record_failure
from lightning_probes.monitors._fit_start import start_fit
from lightning_probes.monitors._publish import ProbeResult, publish
from lightning_probes.monitors._run_logs import RunLogHooks, TextCache
from lightning_probes.monitors._state import MonitorState
from lightning_probes.monitors._stopping import decide_stop
from lightning_probes.monitors._summaries import Summaries
from lightning_probes.monitors.trial import trial_probe
from lightning_probes.probe_set import ProbeSet, Source
from lightning_probes.schedules import Schedule, as_schedule, log_spaced
from lightning_probes.triggers import Trigger
from lightning_probes.weights import check_strategy

__all__ = ["Monitor", "ProbeResult", "Report"]

# Report was the probe result's old name (the HTML report shares it): kept one release; new code uses ProbeResult.
Report = ProbeResult


class Monitor(MonitorState, RunLogHooks, Summaries, RankWork):
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
    # what the measurement is and where it comes from: the section heading of the HTML report (report.py)
    title: ClassVar[str] = "Monitor"
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
        super().__init__()  # the state (clock, history, failures: _state.py)
        self.schedule = as_schedule(log_spaced(per_decade=8, max_interval=500) if schedule is None else schedule)
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
        self.triggers, self.on_error = triggers, on_error
        self.at_start, self.at_end = at_start, at_end
        self.images_every = images_every
        self._silent = False  # under fast_dev_run: no probe
        self._texts = TextCache()  # a text table is written only when it changed
        self.render_images = False  # set before each measure(): are pictures due on this probe?
        self._pictures_pending = False  # pictures were due but the time budget could not pay for them yet
        self.cost_model = CostModel()  # what the next probe is expected to cost (measurement and pictures apart)
        self.step = -1  # the global step of the probe being measured
        self._warned: set[str] = set()
        self._train_base = 0.0
        self._training: TrainingClock | None = None  # the fit's training clock, shared by all its monitors
        self._sinks: list[_loggers.Sink] = []  # the attached loggers that take pictures and text (rank 0)

    # ------------------------------------------------------------------ what a subclass provides
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeResult:
        """Run the measurement (in eval mode, under ``no_grad`` unless ``needs_grad``) and return a ProbeResult."""
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

    # ------------------------------------------------------------------ public helpers
    @property
    def prefix(self) -> str:
        return f"probes/{self.name}/"

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
            assign_names(attached_monitors(trainer, Monitor))  # distinct default names, no two writing the same tags
            self.check_model(trainer, pl_module)
            # like ModelCheckpoint and EarlyStopping: a fast_dev_run checks the monitor fits the model, probes nothing
            self._silent = bool(getattr(trainer, "fast_dev_run"))  # set by Lightning at run time, not declared
            if self._silent:
                rank_zero_info(f"[lightning-probes/{self.name}] fast_dev_run: the model was checked, no probe runs.")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # everything done here (probe set, checks, warm-up) is set-up, not training: out of every monitor's clock
        self._training = training_clock(trainer, self)
        began = time.perf_counter()
        start_fit(self, trainer, pl_module, attached_monitors(trainer, Monitor))
        self._training.exclude(time.perf_counter() - began)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after every monitor's own on_train_start (a subclass prepares itself after the base's), before any step
        if not self._tried:  # once per fit; a check, not training: outside every clock
            self._tried = True
            trial_probe(self, trainer, pl_module)

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
        if probe_due(self, trainer, trainer.global_step):  # the hot path of every training step: decide and return
            self._probe(trainer, pl_module, trainer.global_step)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_end and trainer.global_step != self.clock.last_step:
            self._probe(trainer, pl_module, trainer.global_step, final=True)
        self._flush(trainer)

    # ------------------------------------------------------------------ the probe
    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, final: bool = False) -> None:
        """One probe, in named steps: skip, decide (pictures), measure and check, agree (DDP), publish or record
        the failure, triggers, book (cost and clock). Each step's code lives in its module (see the top)."""
        if self._silent:  # fast_dev_run
            return
        token = self.cost_model.start()
        self.step = step
        self.render_images, self._pictures_pending = pictures_due(self, final)
        snapshot = rollback_point(self, trainer)  # under DDP: what the probe may change, in case another rank fails
        result, error = attempt(self, trainer, pl_module)  # measure and check; a failure is caught (on_error)
        error = agree_on_failure(trainer, error)  # a probe that failed on any rank is skipped on every rank
        if error is None:
            assert result is not None  # attempt() returns a result whenever it returns no error
            publish(self, trainer, result, step)
        else:
            roll_back(self, snapshot)  # every rank carries the same state into the next probe
            record_failure(self, trainer, step, error)
        if not final:
            decide_stop(self, trainer, None if error else result, step)
        book(self, trainer, token, step, final)


_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
