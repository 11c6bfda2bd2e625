"""The fixed data a monitor looks at, and capture of layer inputs/outputs by module name.

A :class:`ProbeSet` is fixed once, at fit start, so every probe point of a run looks at the same samples; fixing
it never consumes the global random stream (map-style data is read by index, iterable data under a forked RNG).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data import default_collate

__all__ = ["ProbeSet", "capture", "probing", "resolve_module", "module_names"]

Where = Literal["input", "output"]


def module_names(model: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...] | None = None) -> list[str]:
    """Names of the submodules of ``model`` (of type ``kind`` if given), in registration order."""
    return [name for name, mod in model.named_modules() if name and (kind is None or isinstance(mod, kind))]


def resolve_module(
    model: nn.Module, name: str, kind: type[nn.Module] | tuple[type[nn.Module], ...] | None = None
) -> nn.Module:
    """The submodule called ``name``; a clear error listing the real names when it is missing or of the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> resolve_module(net, "2", nn.Linear)
        Linear(in_features=3, out_features=1, bias=True)
        >>> resolve_module(net, "head", nn.Linear)
        Traceback (most recent call last):
        ...
        ValueError: No module named 'head' in Sequential. Linear modules: '0', '2'.
    """
    modules = dict(model.named_modules())
    label = "" if kind is None else " ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,))) + " "
    available = ", ".join(repr(n) for n in module_names(model, kind)) or "(none)"
    if name not in modules or not name:
        raise ValueError(f"No module named {name!r} in {type(model).__name__}. {label}modules: {available}.")
    module = modules[name]
    if kind is not None and not isinstance(module, kind):
        raise TypeError(
            f"Module {name!r} is a {type(module).__name__}, not a {label.strip()}. {label}modules: {available}."
        )
    return module


@contextlib.contextmanager
def capture(model: nn.Module, layers: Mapping[str, Where]) -> Iterator[dict[str, Tensor]]:
    """Record the input or output of named submodules during forward passes; the hooks are always removed.

    The yielded dict maps each name to the tensor of that module's most recent call (its first positional input
    for ``"input"``). It is refreshed on every forward pass inside the ``with`` block.

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


Source = Tensor | Sequence[Tensor] | Dataset | Literal["train", "val"]


class ProbeSet:
    """The fixed samples a monitor runs through the model.

    Args:
        data: inputs ``x`` (N, ...), a pair ``(x, y)``, a map-style or iterable ``Dataset`` of ``(x, y)`` samples,
            or ``"train"`` / ``"val"``: the first ``max_samples`` samples of the fit's train / val data.
        max_samples: at most this many samples are kept.
        batch_size: batch size of probe forward passes.

    Example:
        >>> probe = ProbeSet((torch.randn(10, 3), torch.arange(10)), max_samples=8, batch_size=3)
        >>> probe.materialise()
        >>> len(probe), [len(x) for x, _ in probe.batches("cpu")]
        (8, [3, 3, 2])
        >>> [y.tolist() for _, y in probe.batches("cpu", rank=1, world_size=2)]
        [[1, 3, 5], [7]]
    """

    def __init__(self, data: Source, max_samples: int = 512, batch_size: int = 256) -> None:
        if isinstance(data, str) and data not in ("train", "val"):
            raise ValueError(f"probe_data must be 'train', 'val', tensors or a Dataset, got {data!r}.")
        if not isinstance(data, (str, Tensor, Dataset, tuple, list)):
            raise TypeError(
                f"probe_data must be 'train', 'val', a tensor, an (x, y) pair or a Dataset, got {type(data).__name__}."
            )
        if isinstance(data, (tuple, list)) and not (len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
            raise TypeError("probe_data given as a sequence must be a pair of tensors (x, y).")
        if isinstance(data, (tuple, list)) and len(data[0]) != len(data[1]):
            raise ValueError(f"probe_data x has {len(data[0])} samples but y has {len(data[1])}.")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (max_samples, batch_size)):
            raise ValueError(
                f"max_samples and batch_size must be positive integers, got {max_samples!r}, {batch_size!r}."
            )
        self.source = data
        self.max_samples = max_samples
        self.batch_size = batch_size
        self.inputs: Tensor | None = None
        self.targets: Tensor | None = None

    def __repr__(self) -> str:
        src = self.source if isinstance(self.source, str) else type(self.source).__name__
        return f"ProbeSet({src}, max_samples={self.max_samples})"

    def __len__(self) -> int:
        if self.inputs is None:
            raise RuntimeError("the probe set is fixed at fit start; it has not been materialised yet.")
        return len(self.inputs)

    @property
    def ready(self) -> bool:
        return self.inputs is not None

    def materialise(self, trainer: Any = None) -> None:
        """Fix the samples (at fit start). ``trainer`` is needed for ``"train"`` / ``"val"``."""
        if self.ready:
            return
        src = self.source
        if isinstance(src, Tensor):
            self.inputs, self.targets = src[: self.max_samples], None
        elif isinstance(src, (tuple, list)):
            self.inputs, self.targets = src[0][: self.max_samples], src[1][: self.max_samples]
        elif isinstance(src, Dataset):
            self._from_dataset(src, default_collate)
        else:
            loader = _fit_loader(trainer, src)
            self._from_dataset(loader.dataset, loader.collate_fn or default_collate, loader)
        if len(self.inputs) == 0:
            raise ValueError(f"the probe set from {self!r} is empty.")

    def _from_dataset(self, dataset: Dataset, collate: Any, loader: DataLoader | None = None) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            # no indexing: read the loader (or dataset) itself, on a forked RNG so a shuffling sampler or an
            # augmenting dataset does not advance the training stream
            samples: list = []
            with torch.random.fork_rng(devices=[]):
                for item in loader if loader is not None else dataset:
                    batch = item if loader is not None else collate([item])
                    samples.append(batch)
                    if sum(len(_split(b)[0]) for b in samples) >= self.max_samples:
                        break
            parts = [_split(b) for b in samples]
            xs = torch.cat([p[0] for p in parts])[: self.max_samples]
            ys = [p[1] for p in parts]
            self.inputs = xs
            self.targets = None if ys[0] is None else torch.cat(ys)[: self.max_samples]
            return
        count = min(len(dataset), self.max_samples)
        batch = collate([dataset[i] for i in range(count)])
        self.inputs, self.targets = _split(batch)

    def batches(
        self, device: torch.device | str, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Yield ``(x, y)`` batches on ``device``; with ``world_size > 1``, only this rank's share (every
        ``world_size``-th sample from ``rank``), so per-rank sums add up to the one-process sums."""
        if self.inputs is None:
            raise RuntimeError("the probe set has not been materialised; call materialise(trainer) first.")
        x = self.inputs[rank::world_size]
        y = None if self.targets is None else self.targets[rank::world_size]
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            yield (
                x[start:stop].to(device, non_blocking=True),
                None if y is None else y[start:stop].to(device, non_blocking=True),
            )


def _split(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 1 and isinstance(batch[0], Tensor):
        second = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], second
    raise TypeError(
        f"probe samples must be tensors or (input, target) tuples, got {type(batch).__name__}; "
        "pass probe_data=(x, y) tensors for other formats."
    )


def _fit_loader(trainer: Any, which: str) -> DataLoader:
    """The train / val DataLoader of the current fit, without iterating it."""
    if trainer is None:
        raise ValueError(f"probe_data={which!r} needs the trainer: it is taken from the fit's {which} data.")
    loop = trainer.fit_loop if which == "train" else trainer.fit_loop.epoch_loop.val_loop
    source = getattr(loop, "_data_source", None)
    loader = None
    if source is not None and source.is_defined():
        loader = source.dataloader()
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    if not isinstance(loader, DataLoader):
        raise ValueError(
            f"probe_data={which!r} but the fit has no {which} DataLoader"
            + (" (define val_dataloader in the model or datamodule, or pass probe_data tensors)." if which == "val"
               else "; pass probe_data tensors or a Dataset instead.")
        )
    return loader
