"""Build the API reference of ``lightning_probes`` from its docstrings into docs/api/ (HTML, offline), with pdoc.

    pip install -e ".[docs]" && python docs/build_api.py            # writes docs/api/index.html
    python docs/build_api.py --out /tmp/api                           # elsewhere

The build fails (exit status 1, each problem printed) when

- pdoc warns while it reads or renders the package (a module that does not import, an annotation or a docstring
  it cannot parse, a member it cannot document), or
- a docstring's Sphinx-style cross reference (:class:`X`, :func:`~pkg.mod.f`, :meth:`Y.z`, ...) names nothing
  that exists: pdoc renders such a reference as plain code without a word, so this script resolves each one
  itself, against the full path, then the docstring's module, then its class.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pdoc
import pdoc.doc
import pdoc.render

PACKAGE = "lightning_probes"
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`~?([A-Za-z_][\w.]*)`")


def public_modules() -> list[str]:
    """The package and its public top-level submodules and subpackages: the root's ``__all__`` hides them from
    pdoc's own walk, so they are named one by one; pdoc walks the subpackages' modules itself."""
    package = importlib.import_module(PACKAGE)
    names = [m.name for m in pkgutil.iter_modules(package.__path__, f"{PACKAGE}.")]
    walked = {f"{PACKAGE}.{n}" for n in getattr(package, "__all__", ()) if inspect.ismodule(getattr(package, n))}
    return [PACKAGE] + sorted(n for n in names if not n.rsplit(".", 1)[1].startswith("_") and n not in walked)


NAMEDTUPLE_ANNOTATION = re.compile(
    r"Error parsing type annotation ForwardRef\('.*?'\) for ([\w.]+)\.__init__\. Import of ([\w.]+) failed")


def _benign(message: str) -> bool:
    """Pdoc's one false alarm here: a ``NamedTuple`` of a module with ``from __future__ import annotations`` keeps
    its field annotations as strings, and pdoc evaluates them for the generated ``__init__`` in ``collections``'
    namespace instead of the module's. Benign only when the name does resolve in the module that defines the class
    (not the package that re-exports it)."""
    found = NAMEDTUPLE_ANNOTATION.search(message)
    if not found:
        return False
    owner, name = found.groups()
    module_name, _, class_name = owner.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            return False
        home = importlib.import_module(cls.__module__)
    except ImportError:
        return False
    return _resolves(f"{home.__name__}.{name}")


def _all_modules(module: pdoc.doc.Module) -> Iterator[pdoc.doc.Module]:
    yield module
    for sub in module.submodules:
        yield from _all_modules(sub)


def _walk(module: pdoc.doc.Module) -> Iterator[pdoc.doc.Doc]:
    """Every documented object of ``module`` and its submodules (the module itself included)."""
    yield module
    for member in module.own_members:
        if isinstance(member, pdoc.doc.Class):
            yield member
            yield from member.own_members
        elif not isinstance(member, pdoc.doc.Module):
            yield member


def _resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` names a module, or an attribute path below an importable module."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def _own_docstring(doc: pdoc.doc.Doc) -> str:
    """The docstring written for this object here. pdoc shows a method without one with its base class's (torch's
    ``Module.forward``, Lightning's hooks), whose references are relative to that other library; a function's or
    class's own ``__doc__`` is never inherited, so it tells them apart."""
    if doc.taken_from[0].split(".")[0] != PACKAGE:
        return ""
    if isinstance(doc, (pdoc.doc.Function, pdoc.doc.Class)):
        own = getattr(doc.obj, "__doc__", None)
        return inspect.cleandoc(own) if isinstance(own, str) else ""
    return doc.docstring or ""


def broken_references(modules: list[pdoc.doc.Module]) -> list[str]:
    """Cross references in the docstrings of ``modules`` that name nothing, as ``'where: reference'`` lines."""
    docs = [doc for module in modules for sub in _all_modules(module) for doc in _walk(sub)]
    # what pdoc documents, under its public and its defining path: instance attributes set in __init__ included
    known = {d.fullname for d in docs} | {".".join(d.taken_from) for d in docs}
    problems = []
    for doc in docs:
        module_name, qualname = doc.taken_from  # where it is defined, not where it is re-exported
        owner = qualname.split(".")[0]
        # a module of a subpackage may name what its package exports (its siblings' public names)
        package = module_name.rpartition(".")[0]
        scopes = ["", f"{module_name}.", f"{module_name}.{owner}.", f"{package}.", f"{PACKAGE}."]
        for target in ROLE.findall(_own_docstring(doc)):
            if not any(scope + target in known or _resolves(scope + target) for scope in scopes):
                problems.append(f"{doc.fullname}: {target}")
    return sorted(set(problems))


def build(out: Path) -> list[str]:
    """Render the package's reference into ``out``; return every problem found (empty when the build is clean)."""
    pdoc.render.configure(docformat="google", show_source=False, search=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = public_modules()
        pdoc.pdoc(*names, output_directory=out)
        references = broken_references([pdoc.doc.Module(importlib.import_module(n)) for n in names])
    # any warning at all while pdoc imports, reads and renders: the package imports cleanly today, so a new one is
    # a problem to look at (a docstring pdoc cannot parse, an annotation it cannot evaluate, a failing import)
    problems = [f"warning: {w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
                if not _benign(str(w.message))]
    problems += [f"broken reference in {line}" for line in references]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "api",
                        help="output directory (default: docs/api)")
    args = parser.parse_args(argv)
    problems = build(args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"API reference: {len(problems)} problem(s); fix them (the HTML in {args.out} is incomplete)",
              file=sys.stderr)
        return 1
    print(f"API reference written to {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
