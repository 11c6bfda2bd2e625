"""The fixed data a monitor looks at, and capture of layer inputs/outputs by module name.

A :class:`ProbeSet` is fixed once, at fit start, so every probe point of a run looks at the same samples; fixing
it never consumes the global random stream (map-style data is read by index, iterable data under a forked RNG).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from lightning_probes import batches as structure

__all__ = ["ProbeSet", "capture", "check_forward", "probing", "resolve_module", "module_names"]

Where = Literal["input", "output"]


def module_names(model: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...] | None = None) -> list[str]:
    """Names of the submodules of ``model`` (of type ``kind`` if given), in registration order."""
    return [name for name, mod in model.named_modules() if name and (kind is None or isinstance(mod, kind))]


def resolve_module(
    model: nn.Module, name: str, kind: type[nn.Module] | tuple[type[nn.Module], ...] | None = None
) -> nn.Module:
    """The submodule called ``name``; a clear error suggesting the closest real names when it is missing or of the
    wrong type.

    Suggestions are the modules whose name ends with ``name`` (a model wrapped as ``self.model``: ``"classifier"``
    -> ``"model.classifier"``) and the closest names by ``difflib``; the error lists the modules of ``kind`` only
    when there are few of them.

    Raises:
        ValueError: no module of that name (the message suggests close names).
        TypeError: the module is not of the kind asked for.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> resolve_module(net, "2", nn.Linear)
        Linear(in_features=3, out_features=1, bias=True)
        >>> resolve_module(net, "head", nn.Linear)
        Traceback (most recent call last):
        ...
        ValueError: No module named 'head' in Sequential. Linear modules: '0', '2'.
        >>> wrapped = nn.Module()
        >>> wrapped.model = nn.Sequential()
        >>> wrapped.model.add_module("classifier", nn.Linear(2, 2))
        >>> resolve_module(wrapped, "classifier")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: No module named 'classifier' in Module; did you mean 'model.classifier'? modules: ...
    """
    modules = dict(model.named_modules())
    label = "" if kind is None else " ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,))) + " "
    same_kind = module_names(model, kind)
    if name not in modules or not name:
        raise ValueError(f"No module named {name!r} in {type(model).__name__}"
                         f"{_suggest(name, same_kind or list(modules))}{label}modules: {_short(same_kind)}.")
    module = modules[name]
    if kind is not None and not isinstance(module, kind):
        raise TypeError(
            f"Module {name!r} is a {type(module).__name__}, not a {label.strip()}"
            f"{_suggest(name, same_kind, inside=True)}{label}modules: {_short(same_kind)}."
        )
    return module


def _suggest(name: str, candidates: Sequence[str], inside: bool = False) -> str:
    """'; did you mean 'a' or 'b'? ' — names ending in ``name`` (or inside it), then the closest by difflib."""
    if not name:
        return ". "
    by_suffix = [c for c in candidates if c != name and (c.endswith("." + name)
                                                         or (inside and c.startswith(name + ".")))]
    close = difflib.get_close_matches(name, [c for c in candidates if c not in by_suffix], n=3, cutoff=0.75)
    tails = {c.rsplit(".", 1)[-1]: c for c in candidates}  # 'classifer' vs 'model.classifier': compare last parts
    close += [tails[t] for t in difflib.get_close_matches(name.rsplit(".", 1)[-1], list(tails), n=2, cutoff=0.75)]
    found = list(dict.fromkeys(by_suffix[:3] + close))[:3]
    return f"; did you mean {' or '.join(map(repr, found))}? " if found else ". "


def _short(names: Sequence[str], limit: int = 12) -> str:
    if not names:
        return "(none)"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


@contextlib.contextmanager
def capture(model: nn.Module, layers: Mapping[str, Where]) -> Iterator[dict[str, Tensor]]:
    """Record the input or output of named submodules during forward passes; the hooks are always removed.

    The yielded dict maps each name to the tensor of that module's most recent call (its first positional input
    for ``"input"``). It is refreshed on every forward pass inside the ``with`` block.

    Raises:
        ValueError: a capture point other than 'input' or 'output'.
        TypeError: (during the forward pass) a module called without a tensor first input, or returning a non-tensor.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> with capture(net, {"2": "input", "0": "output"}) as seen:
        ...     _ = net(torch.ones(4, 2))
        >>> seen["2"].shape, seen["0"].shape
        (torch.Size([4, 3]), torch.Size([4, 3]))
        >>> len(net[2]._forward_pre_hooks)
        0
    """
    store: dict[str, Tensor] = {}
    handles = []
    try:
        for name, where in layers.items():
            module = resolve_module(model, name)
            if where == "input":
                def pre_hook(_mod: nn.Module, args: tuple, _name: str = name) -> None:
                    if not args or not isinstance(args[0], Tensor):
                        raise TypeError(f"module {_name!r} was not called with a tensor as its first input.")
                    store[_name] = args[0].detach()

                handles.append(module.register_forward_pre_hook(pre_hook))
            elif where == "output":
                def hook(_mod: nn.Module, _args: tuple, output: Any, _name: str = name) -> None:
                    if not isinstance(output, Tensor):
                        raise TypeError(f"module {_name!r} returned {type(output).__name__}, not a tensor.")
                    store[_name] = output.detach()

                handles.append(module.register_forward_hook(hook))
            else:
                raise ValueError(f"capture point must be 'input' or 'output', got {where!r} for {name!r}.")
        yield store
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def probing(model: nn.Module, grad: bool = False) -> Iterator[None]:
    """Eval mode and no_grad for a probe; every submodule's own training flag and the RNG are restored afterwards.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
        >>> net[1].eval()  # a user may keep parts in eval mode on purpose
        Dropout(p=0.5, inplace=False)
        >>> with probing(net):
        ...     net.training, torch.is_grad_enabled()
        (False, False)
        >>> net.training, net[1].training
        (True, False)
    """
    modes = [(m, m.training) for m in model.modules()]
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    try:
        # fork_rng: whatever the probe draws (masks, noise, samplers) leaves the training stream untouched
        with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})), torch.set_grad_enabled(grad):
            model.eval()
            yield
    finally:
        for module, mode in modes:
            module.training = mode


Source = Any  # tensors, (x, y), a mapping of tensors, a Dataset, a DataLoader, or "train" / "val" / "test"
FIT_LOADERS = ("train", "val", "test")


class ProbeSet:
    """The fixed samples a monitor runs through the model, as one collated batch of any structure.

    The samples are read once, at fit start, collated with the loader's own ``collate_fn`` (``default_collate``
    for a Dataset) and kept on the module's device as one nested batch (:attr:`data`): tensors, tuples, lists,
    mappings. Probe batches are slices of it along the sample dimension (every tensor leaf indexed along dim 0,
    other leaves carried along). How the model is called and where the targets are follows the call rule of
    :mod:`lightning_probes.batches` unless the ``forward`` / ``targets`` hooks say otherwise.

    Args:
        data: inputs ``x`` (N, ...), a pair ``(x, y)``, a mapping of tensors (a tokenizer's output for the whole
            probe set), a map-style or iterable ``Dataset``, a ``DataLoader``, or ``"train"`` / ``"val"`` /
            ``"test"``: the first ``max_samples`` samples of the fit's loader of that name. Samples may be
            tensors, tuples, lists, dicts or dict-like objects (``UserDict``, ``BatchEncoding``), nested.
        max_samples: at most this many samples are kept.
        batch_size: batch size of probe forward passes.
        forward: optional hook ``(module, inputs) -> model output`` (``inputs``: the batch with its targets held
            out, e.g. the dict without ``"labels"``), or its import path ``"pkg.mod.fn"``; default: the call rule.
        targets: optional hook ``batch -> targets``, or its import path; default: the call rule.
        target_key: the key holding the targets in mapping batches (default: the first of ``"labels"``,
            ``"label"``, ``"y"``, ``"target"`` present).

    Raises:
        ValueError: an unknown probe_data name; an (x, y) pair of different lengths or tensors of different sample
            counts; max_samples or batch_size not a positive integer; target_key not a non-empty string.
        TypeError: probe_data of another type, or a sequence or mapping without tensors.

    Example:
        >>> probe = ProbeSet((torch.randn(10, 3), torch.arange(10)), max_samples=8, batch_size=3)
        >>> probe.materialise()
        >>> len(probe), [len(x) for x, _ in probe.batches("cpu")]
        (8, [3, 3, 2])
        >>> [y.tolist() for _, y in probe.batches("cpu", rank=1, world_size=2)]
        [[1, 3, 5], [7]]
        >>> tokens = ProbeSet({"input_ids": torch.ones(4, 6, dtype=torch.long), "labels": torch.arange(4)})
        >>> tokens.materialise()
        >>> list(tokens.inputs), tokens.targets.tolist()
        (['input_ids'], [0, 1, 2, 3])
    """

    def __init__(
        self,
        data: Source,
        max_samples: int = 512,
        batch_size: int = 256,
        forward: Callable[[nn.Module, Any], Any] | str | None = None,
        targets: Callable[[Any], Any] | str | None = None,
        target_key: str | None = None,
    ) -> None:
        if isinstance(data, str) and data not in FIT_LOADERS:
            raise ValueError(f"probe_data must be 'train', 'val', 'test', tensors, a Dataset or a DataLoader, got "
                             f"{data!r}.")
        if not isinstance(data, (str, Tensor, Dataset, DataLoader, tuple, list, Mapping)):
            raise TypeError(
                "probe_data must be 'train', 'val', 'test', a tensor, an (x, y) pair, a mapping of tensors, a "
                f"Dataset or a DataLoader, got {type(data).__name__}."
            )
        if isinstance(data, (tuple, list, Mapping)):
            if not structure.leaves(data):
                raise TypeError("probe_data given as a sequence or mapping must hold tensors, e.g. a pair (x, y).")
            if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data) \
                    and data[0].ndim and data[1].ndim and len(data[0]) != len(data[1]):
                raise ValueError(f"probe_data x has {len(data[0])} samples but y has {len(data[1])}.")
            structure.num_samples(data)  # every tensor the same number of samples
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (max_samples, batch_size)):
            raise ValueError(
                f"max_samples and batch_size must be positive integers, got {max_samples!r}, {batch_size!r}."
            )
        if target_key is not None and (not isinstance(target_key, str) or not target_key):
            raise ValueError(f"target_key must be a key name such as 'labels', got {target_key!r}.")
        self.source = data
        self.max_samples = max_samples
        self.batch_size = batch_size
        self.forward_hook = structure.resolve_callable(forward, "forward")
        self.targets_hook = structure.resolve_callable(targets, "targets")
        self.target_key = target_key
        self.data: Any = None  # the collated probe set: one nested batch of all samples

    def __repr__(self) -> str:
        src = self.source if isinstance(self.source, str) else type(self.source).__name__
        return f"ProbeSet({src}, max_samples={self.max_samples})"

    def __len__(self) -> int:
        return self.num_samples

    @property
    def num_samples(self) -> int:
        """How many samples the probe set holds."""
        if self.data is None:
            raise RuntimeError("the probe set is fixed at fit start; it has not been materialised yet.")
        return self._n

    @property
    def ready(self) -> bool:
        return self.data is not None

    @property
    def device(self) -> torch.device | None:
        found = structure.leaves(self.data) if self.data is not None else []
        return found[0][1].device if found else None

    # ------------------------------------------------------------------ the structure of a batch
    def split(self, batch: Any) -> tuple[Any, Any]:
        """(model inputs, targets or None) of a batch as the loader yields it: the call rule, with the ``targets``
        hook's answer for the targets if given (the inputs are then the whole batch where the rule cannot split it)."""
        if self.targets_hook is not None:
            try:
                inputs = structure.split_batch(batch, self.target_key)[0]
            except ValueError:  # e.g. (x, y, weights): the forward hook gets the whole batch
                inputs = batch
            return inputs, self.targets_hook(batch)
        inputs, targets, _ = structure.split_batch(batch, self.target_key)
        return inputs, targets

    def inputs_of(self, batch: Any) -> Any:
        """The part of a loader batch that reaches the model (targets held out)."""
        return self.split(batch)[0]

    def targets_of(self, batch: Any) -> Any:
        """The targets of a loader batch (None if there are none)."""
        return self.split(batch)[1]

    def input_path(self, key: str | None = None) -> tuple:
        """Where the input tensor lives in the model inputs: ``()`` for a tensor, ``(key,)`` for a mapping (``key``
        default ``"input_ids"``). Used to mask or replace that tensor while carrying the rest along."""
        inputs = self.inputs
        if isinstance(inputs, Mapping):
            key = key or "input_ids"
            if key not in inputs:
                raise KeyError(f"the probe batches are mappings without key {key!r} (their model inputs: "
                               f"{list(inputs)}); say which key holds the input, e.g. player_key='input_ids'.")
            return (key,)
        if key is not None:
            raise ValueError(f"a key {key!r} was given but the model inputs are a {type(inputs).__name__}, not a "
                             "mapping.")
        if not isinstance(inputs, Tensor):
            raise TypeError(f"the model inputs of a probe batch are a {type(inputs).__name__}; this needs a tensor "
                            "or a mapping of tensors with a key naming the input.")
        return ()

    @property
    def inputs(self) -> Any:
        """The model inputs of the whole probe set (a tensor for plain ``(x, y)`` probe sets)."""
        return self.inputs_of(self._need_data())

    @property
    def targets(self) -> Any:
        """The targets of the whole probe set, or None."""
        return self.targets_of(self._need_data())

    # ------------------------------------------------------------------ running the model
    def forward(self, module: nn.Module, inputs: Any) -> Any:
        """The model's output on model ``inputs`` (as :meth:`batches` yields them): the ``forward`` hook, else the
        call rule (``module(x)``, ``module(**inputs)``, ``module(*inputs)``)."""
        if self.forward_hook is not None:
            return self.forward_hook(module, inputs)
        return structure.call_model(module, inputs)

    def logits(self, module: nn.Module, inputs: Any) -> Tensor:
        """The logits of the model on ``inputs`` (:meth:`forward`, then the logits rule)."""
        return structure.logits_of(self.forward(module, inputs))

    def batches(
        self, device: torch.device | str | None = None, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Any, Any]]:
        """Yield ``(inputs, targets)`` on ``device``: the model inputs (what :meth:`forward` takes) and the targets
        (or None) of ``batch_size`` samples at a time. With ``world_size > 1``, only this rank's share (every
        ``world_size``-th sample from ``rank``), so per-rank sums add up to the one-process sums."""
        data = self._need_data()
        share = torch.arange(rank, self._n, world_size)
        for start in range(0, len(share), self.batch_size):
            yield self.split(self._on(structure.index(data, share[start : start + self.batch_size]), device))

    def batch(self, indices: Sequence[int] | Tensor | slice | None = None, device: Any = None) -> Any:
        """The samples ``indices`` (default: all) as one batch, on ``device``."""
        data = self._need_data()
        return self._on(data if indices is None else structure.index(data, indices), device)

    def select(self, indices: Sequence[int] | Tensor | slice) -> ProbeSet:
        """A materialised probe set of the samples ``indices`` only, with the same hooks and batch size."""
        view = ProbeSet.__new__(ProbeSet)
        view.__dict__.update(self.__dict__)
        view.data = structure.index(self._need_data(), indices)
        view._n = structure.num_samples(view.data)
        return view

    def to(self, device: torch.device | str) -> ProbeSet:
        """Move the probe set to ``device`` (in place)."""
        self.data = self._on(self._need_data(), device)
        return self

    # ------------------------------------------------------------------ fixing the samples
    def materialise(self, trainer: Any = None, device: torch.device | str | None = None) -> None:
        """Fix the samples (at fit start); ``trainer`` is needed for ``"train"`` / ``"val"`` / ``"test"``. Then
        keep them on ``device`` (the module's).

        Raises:
            ValueError: the probe set is empty, or a fit loader name without a trainer or without that loader.
        """
        if not self.ready:
            src = self.source
            if isinstance(src, (Tensor, tuple, list, Mapping)):
                data = src
            elif isinstance(src, DataLoader):
                data = self._from_loader(src)
            elif isinstance(src, Dataset):
                data = self._from_dataset(src, default_collate)
            else:
                data = self._from_loader(_fit_loader(trainer, src))
            self._n = structure.num_samples(data)
            if self._n > self.max_samples:
                data = structure.index(data, slice(0, self.max_samples))
                self._n = self.max_samples
            self.data = data
            if self._n == 0:
                raise ValueError(f"the probe set from {self!r} is empty.")
        if device is not None:
            self.to(device)

    def _from_loader(self, loader: DataLoader) -> Any:
        return self._from_dataset(loader.dataset, loader.collate_fn or default_collate, loader)

    def _from_dataset(self, dataset: Dataset, collate: Any, loader: DataLoader | None = None) -> Any:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            # no indexing: read the loader (or dataset) itself, on a forked RNG so a shuffling sampler or an
            # augmenting dataset does not advance the training stream
            parts: list = []
            seen = 0
            with torch.random.fork_rng(devices=[]):
                for item in loader if loader is not None else iter(dataset):
                    part = item if loader is not None else collate([item])
                    parts.append(part)
                    seen += structure.num_samples(part)
                    if seen >= self.max_samples:
                        break
            if not parts:
                raise ValueError(f"the probe set from {self!r} is empty.")
            return structure.concat(parts)
        # map-style: the first samples by index (unaffected by the sampler's shuffling), collated once
        count = min(len(dataset), self.max_samples)
        if count == 0:
            raise ValueError(f"the probe set from {self!r} is empty.")
        return collate([dataset[i] for i in range(count)])

    def _need_data(self) -> Any:
        if self.data is None:
            raise RuntimeError("the probe set has not been materialised; call materialise(trainer) first.")
        return self.data

    @staticmethod
    def _on(tree: Any, device: Any) -> Any:
        if device is None:
            return tree
        device = torch.device(device)
        return structure.map_tensors(lambda t: t if t.device == device else t.to(device, non_blocking=True), tree)


def _fit_loader(trainer: Any, which: str) -> DataLoader:
    """The train / val / test DataLoader of the current fit, without iterating it."""
    if trainer is None:
        raise ValueError(f"probe_data={which!r} needs the trainer: it is taken from the fit's {which} data.")
    loop = {"train": lambda: trainer.fit_loop, "val": lambda: trainer.fit_loop.epoch_loop.val_loop,
            "test": lambda: trainer.test_loop}[which]()
    source = getattr(loop, "_data_source", None)
    loader = None
    if source is not None and source.is_defined():
        loader = source.dataloader()
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    if not isinstance(loader, DataLoader):
        hint = {"val": " (define val_dataloader in the model or datamodule, or pass probe_data tensors).",
                "test": " (define test_dataloader in the model or datamodule, or pass probe_data tensors)."}
        raise ValueError(f"probe_data={which!r} but the fit has no {which} DataLoader"
                         + hint.get(which, "; pass probe_data tensors, a Dataset or a DataLoader instead."))
    return loader


def check_forward(probe: ProbeSet, module: nn.Module, owner: str) -> None:
    """Run one probe sample through the model at fit start, so probe data the model cannot take (wrong shape,
    dtype or keys) fails with a message about the probe data, not deep in a probe as a shape error.

    Raises:
        ValueError: the model cannot run on one probe sample (the cause is chained).
    """
    inputs, _ = probe.split(probe.batch(slice(0, 1), device=getattr(module, "device", None)))
    try:
        with probing(module):
            probe.forward(module, inputs)
    except Exception as err:
        if isinstance(inputs, Tensor):
            what = f"samples of shape {tuple(inputs.shape[1:])}, dtype {inputs.dtype}"
        else:
            what = f"{type(inputs).__name__} inputs {structure.describe(inputs)}"
        raise ValueError(
            f"{owner}: the model cannot run on the probe inputs ({what}): {type(err).__name__}: {err}. probe_data "
            "must hold inputs the model takes, like its training batches; the model is called as module(x) for a "
            "tensor, module(**inputs) for a mapping (its target key held out); or pass forward=..."
        ) from err
