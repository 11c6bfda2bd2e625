"""Batches of any structure: nested tensors, tuples, lists and mappings, and the one rule for calling a model on them.

A probe batch is what a DataLoader yields: a tensor, a tuple / list, a mapping (``dict``, ``UserDict`` such as
``transformers.BatchEncoding``), nested in any way. Its *tensor leaves* carry the samples along dim 0; other leaves
(strings, numbers, ``None``) are carried along untouched.

**The call rule** (:func:`split_batch`, :func:`call_model`):

- a tensor ``x``: the input, no targets; the model is called as ``module(x)``;
- a tuple / list ``(inputs, targets)`` (or ``(inputs,)``): inputs first, targets second; the inputs are called
  by their own structure (a tensor: ``module(x)``; a mapping: ``module(**inputs)``; a tuple: ``module(*inputs)``);
- a mapping: the target key (``target_key`` if given, else the first of ``"labels"``, ``"label"``, ``"y"``,
  ``"target"`` that is present) is held out as the targets, everything else reaches the model as
  ``module(**inputs)`` — an ``attention_mask`` included.

**The logits rule** (:func:`logits_of`): a tensor output is the logits; otherwise the ``.logits`` attribute (Hugging
Face ``ModelOutput``, any dataclass with that field) or the ``"logits"`` key; otherwise the first element (of a
tuple / list, the first field of a dataclass, the first value of a mapping).

Two hooks replace either rule: ``forward(module, inputs) -> output`` (it receives the model inputs: the batch with
its targets held out, e.g. the dict without ``"labels"``) and ``targets(batch) -> targets`` (the whole batch).
Both may be given as import paths (``"pkg.mod.fn"``), so
they can be set in a YAML config.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "TARGET_KEYS", "call_model", "concat", "find_target_key", "get_path", "index", "leaves", "logits_of", "map_tensors",
    "num_samples", "resolve_callable", "set_path", "split_batch",
]

TARGET_KEYS = ("labels", "label", "y", "target")

Path = tuple[Any, ...]


def _rebuild_mapping(template: Mapping, items: dict) -> Mapping:
    """A mapping of ``template``'s type holding ``items`` (dict, OrderedDict, UserDict, BatchEncoding, ...)."""
    if type(template) is dict:
        return items
    factory: Any = type(template)  # a concrete mapping class, whose constructor may not take a dict (tried here)
    try:
        return factory(items)
    except Exception:  # a mapping type that cannot be built from a dict: a plain dict keeps the keys and values
        return items


def _rebuild_sequence(template: Sequence, items: list) -> Sequence:
    if isinstance(template, tuple) and hasattr(template, "_fields"):  # namedtuple
        return type(template)(*items)
    if isinstance(template, tuple):
        return tuple(items)
    return items


def map_tensors(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """Apply ``fn`` to every tensor leaf of a nested batch; the structure (and mapping / tuple types) is kept.

    Example:
        >>> map_tensors(lambda t: t * 2, {"a": torch.ones(2), "b": (torch.zeros(1), "text")})
        {'a': tensor([2., 2.]), 'b': (tensor([0.]), 'text')}
    """
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return _rebuild_mapping(tree, {k: map_tensors(fn, v) for k, v in tree.items()})
    if isinstance(tree, (tuple, list)):
        return _rebuild_sequence(tree, [map_tensors(fn, v) for v in tree])
    return tree


def leaves(tree: Any, path: Path = ()) -> list[tuple[Path, Tensor]]:
    """(path, tensor) of every tensor leaf, depth first; a path is the keys / indices from the root.

    Example:
        >>> [(p, tuple(t.shape)) for p, t in leaves({"ids": torch.zeros(3, 5), "extra": [torch.ones(3)]})]
        [(('ids',), (3, 5)), (('extra', 0), (3,))]
    """
    if isinstance(tree, Tensor):
        return [(path, tree)]
    if isinstance(tree, Mapping):
        return [leaf for k, v in tree.items() for leaf in leaves(v, (*path, k))]
    if isinstance(tree, (tuple, list)):
        return [leaf for i, v in enumerate(tree) for leaf in leaves(v, (*path, i))]
    return []


def num_samples(tree: Any) -> int:
    """The number of samples of a nested batch: dim 0 of its tensor leaves, which must all agree.

    Raises:
        TypeError: the batch holds no tensor.
        ValueError: a 0-d tensor, or tensors with different sample counts.

    Example:
        >>> num_samples((torch.zeros(4, 2), torch.arange(4)))
        4
    """
    sizes = {}
    for path, tensor in leaves(tree):
        if tensor.ndim == 0:
            raise ValueError(f"batch leaf at {_show(path)} is a 0-d tensor; every tensor of a batch needs a sample "
                             "dimension first.")
        sizes[path] = tensor.shape[0]
    if not sizes:
        raise TypeError(f"the batch holds no tensor (got {type(tree).__name__}); probe data must hold tensors.")
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{_show(p)}: {n}" for p, n in sizes.items())
        raise ValueError(f"the tensors of a batch must have the same number of samples along dim 0; got {shown}.")
    return next(iter(sizes.values()))


def index(tree: Any, idx: Tensor | slice | Sequence[int]) -> Any:
    """The samples ``idx`` of a nested batch: every tensor leaf indexed along dim 0, other leaves kept.

    Example:
        >>> index({"ids": torch.arange(6).view(3, 2), "name": "x"}, [2, 0])
        {'ids': tensor([[4, 5],
                [0, 1]]), 'name': 'x'}
    """
    if not isinstance(idx, slice):
        idx = torch.as_tensor(idx, dtype=torch.long)
    return map_tensors(lambda t: t[idx.to(t.device) if isinstance(idx, Tensor) else idx], tree)


def concat(trees: Sequence[Any]) -> Any:
    """Join batches of the same structure along the sample dimension (non-tensor leaves: the first batch's).

    Example:
        >>> concat([(torch.zeros(2, 3), torch.arange(2)), (torch.ones(1, 3), torch.arange(1))])[1]
        tensor([0, 1, 0])
    """
    first = trees[0]
    if isinstance(first, Tensor):
        return torch.cat(list(trees))
    if isinstance(first, Mapping):
        return _rebuild_mapping(first, {k: concat([t[k] for t in trees]) for k in first})
    if isinstance(first, (tuple, list)):
        return _rebuild_sequence(first, [concat([t[i] for t in trees]) for i in range(len(first))])
    return first


def get_path(tree: Any, path: Path) -> Any:
    """The leaf (or sub-batch) at ``path``."""
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: Any, path: Path, value: Any) -> Any:
    """A copy of ``tree`` (only along ``path``: other leaves are shared) with ``value`` at ``path``.

    Example:
        >>> set_path({"ids": 1, "mask": 2}, ("ids",), 7)
        {'ids': 7, 'mask': 2}
    """
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(tree, Mapping):
        entries = dict(tree.items())
        entries[key] = set_path(tree[key], rest, value)
        return _rebuild_mapping(tree, entries)
    elements = list(tree)
    elements[key] = set_path(tree[key], rest, value)
    return _rebuild_sequence(tree, elements)


def find_target_key(batch: Mapping, target_key: str | None = None) -> str | None:
    """The key of a mapping batch that holds the targets: ``target_key`` (which must be present) or the first of
    :data:`TARGET_KEYS` present; None if there is none.

    Raises:
        KeyError: target_key is given but not a key of the batch.
    """
    if target_key is not None:
        if target_key not in batch:
            raise KeyError(f"target_key={target_key!r} is not a key of the batch; its keys: {list(batch)}.")
        return target_key
    return next((k for k in TARGET_KEYS if k in batch), None)


def split_batch(batch: Any, target_key: str | None = None) -> tuple[Any, Any, Path]:
    """(inputs, targets or None, path of the inputs in the batch) by the call rule of this module.

    Raises:
        ValueError: a tuple or list of more than 2 elements.
        TypeError: a batch that is not a tensor, tuple, list or mapping.
        KeyError: as :func:`find_target_key`.

    Example:
        >>> inputs, y, path = split_batch({"input_ids": torch.zeros(2, 3), "labels": torch.ones(2)})
        >>> list(inputs), y.tolist(), path
        (['input_ids'], [1.0, 1.0], ())
        >>> split_batch((torch.zeros(2, 3), torch.ones(2)))[2]
        (0,)
    """
    if isinstance(batch, Tensor):
        return batch, None, ()
    if isinstance(batch, Mapping):
        key = find_target_key(batch, target_key)
        if key is None:
            return batch, None, ()
        return _rebuild_mapping(batch, {k: v for k, v in batch.items() if k != key}), batch[key], ()
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None, (0,)
        if len(batch) == 2:
            return batch[0], batch[1], (0,)
        raise ValueError(
            f"a probe batch that is a {type(batch).__name__} of {len(batch)} elements does not follow the call rule "
            "(inputs, targets); pass forward=lambda module, batch: ... and targets=lambda batch: ... to the monitor."
        )
    raise TypeError(f"probe samples must be tensors, tuples, lists or mappings of them, got {type(batch).__name__}.")


def call_model(module: Any, inputs: Any) -> Any:
    """Call ``module`` on model inputs by their structure: ``module(x)``, ``module(**inputs)``, ``module(*inputs)``."""
    if isinstance(inputs, Mapping):
        return module(**inputs)
    if isinstance(inputs, (tuple, list)):
        return module(*inputs)
    return module(inputs)


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output by the logits rule of this module.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Out:
        ...     loss: object
        ...     logits: Tensor
        >>> logits_of(Out(None, torch.ones(2, 3))).shape, logits_of((torch.zeros(2, 4), "aux")).shape
        (torch.Size([2, 3]), torch.Size([2, 4]))
    """
    if isinstance(output, Tensor):
        return output
    found: Any = None
    if isinstance(getattr(output, "logits", None), Tensor):
        found = output.logits
    elif isinstance(output, Mapping):
        found = output["logits"] if "logits" in output else next(iter(output.values()), None)
    elif isinstance(output, (tuple, list)):
        found = output[0] if output else None
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        fields = dataclasses.fields(output)
        found = getattr(output, fields[0].name) if fields else None
    if not isinstance(found, Tensor):
        raise TypeError(
            f"cannot find the logits in the model's output ({type(output).__name__}): it is not a tensor, has no "
            "tensor .logits attribute or 'logits' key, and its first element is not a tensor. Pass "
            "forward=lambda module, batch: <the logits tensor> to the monitor."
        )
    return found


def resolve_callable(spec: Callable | str | None, what: str) -> Callable | None:
    """A hook given as a callable or as an import path ``"pkg.mod.fn"`` (or ``"pkg.mod:fn"``), for YAML configs.

    Raises:
        TypeError: spec neither a callable nor an import path, or resolving to a non-callable.
        ValueError: an import path that is malformed, cannot be imported, or lacks the attribute.

    Example:
        >>> resolve_callable("math.sqrt", "forward")(16.0)
        4.0
    """
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"{what} must be a callable or an import path such as 'mypkg.hooks.{what}', got "
                        f"{type(spec).__name__}.")
    module_name, sep, attr = spec.replace(":", ".").rpartition(".")
    if not sep or not module_name:
        raise ValueError(f"{what}={spec!r} is not an import path 'package.module.function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what}={spec!r}: cannot import module {module_name!r} ({err}).") from err
    if not hasattr(module, attr):
        raise ValueError(f"{what}={spec!r}: module {module_name!r} has no attribute {attr!r}.")
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{what}={spec!r} is a {type(fn).__name__}, not a callable.")
    return fn


def describe(tree: Any) -> str:
    """A short description of a batch's tensor leaves: shapes (without the sample dim) and dtypes.

    Example:
        >>> describe({"input_ids": torch.zeros(2, 5, dtype=torch.long)})
        "'input_ids': (5,) torch.int64"
    """
    parts = [f"{_show(p) + ': ' if p else ''}{tuple(t.shape[1:])} {t.dtype}" for p, t in leaves(tree)]
    return ", ".join(parts)


def _show(path: Path) -> str:
    return "".join(f"[{k!r}]" for k in path) if len(path) != 1 else repr(path[0])
