"""Stage 2a — load a program: the main file, its imports and the prelude, as one table of names.

Takes: a path (or text with a name). Gives: `Program` tables — fns, layers, models and train blocks
by name, each with the file it came from — after checking what needs no shapes: import cycles (the
chain is named), imported files that are missing or not regular files (a directory, a device, a
FIFO: named, never read), duplicate definitions (with a note at the first), the capitalization
rule (layers are Capitalized, functions and models lower-case... models may be either), duplicate
train blocks, and train blocks naming unknown models.

The prelude (grammar/prelude/layers.net) defines the built-in layers the language can express;
user definitions may shadow them. Imported files contribute their fn and layer definitions.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import resources

from . import syntax as S
from .errors import ImportCycleError, NetError, SemanticError, SourceLoc, suggestion
from .parse import parse_file, parse_text, source_file_problem

PRELUDE_FILE = "<prelude>/layers.net"


@dataclass
class Program:
    path: str
    text: str
    fns: dict[str, S.FnDef] = field(default_factory=dict)
    layers: dict[str, S.LayerDef] = field(default_factory=dict)
    models: dict[str, S.ModelDef] = field(default_factory=dict)
    trains: dict[str, S.TrainDef] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # every file read, main first
    # the text of every imported file, by its path relative to the main file's folder: a saved
    # model keeps them, so it rebuilds with the imports it was trained with (load_program's
    # `imports`), wherever it is loaded from and whatever became of those files
    imports: dict[str, str] = field(default_factory=dict)

    def model_names(self) -> list[str]:
        return list(self.models)


@functools.cache
def prelude() -> S.Program:
    text = resources.files("netc.grammar").joinpath("prelude", "layers.net").read_text("utf-8")
    return parse_text(text, PRELUDE_FILE)


def _is_capitalized(name: str) -> bool:
    stripped = name.lstrip("_")
    return bool(stripped) and stripped[0].isupper()


class _Loader:
    def __init__(self, main_path: str, main_text: str | None,
                 imports: dict[str, str] | None = None):
        self.prog = Program(main_path, main_text or "")
        self.loaded: set[str] = set()
        self.user_defs: dict[str, S.Stmt] = {}
        self.base = os.path.dirname(os.path.abspath(main_path))
        self.stored = imports or {}

    def load(self, path: str, text: str | None, chain: tuple[tuple[str, SourceLoc | None], ...]):
        key = os.path.abspath(path) if text is None or chain else path
        if key in self.loaded:
            return
        self.loaded.add(key)
        program = parse_text(text, path) if text is not None else parse_file(path)
        if not self.prog.files:
            self.prog.text = program.text
        else:
            self.prog.imports[os.path.relpath(key, self.base)] = program.text
        self.prog.files.append(path)
        here = (key, None)
        for item in program.items:
            if isinstance(item, S.Import):
                self._import(item, path, chain + (here,))
        for item in program.items:
            if isinstance(item, S.FnDef | S.LayerDef) or (isinstance(item, S.ModelDef)
                                                          and not chain):
                self._define(item)
            elif isinstance(item, S.TrainDef) and not chain:
                self._train(item)

    def _import(self, item: S.Import, importer: str, chain) -> None:
        base = os.path.dirname(os.path.abspath(importer))
        target = os.path.normpath(os.path.join(base, item.path))
        keys = [k for k, _ in chain]
        if os.path.abspath(target) in keys:
            cycle = keys[keys.index(os.path.abspath(target)):] + [os.path.abspath(target)]
            shown = " → ".join(os.path.relpath(k) for k in cycle)
            raise ImportCycleError(f"import cycle: {shown}", item.loc)
        stored = self.stored.get(os.path.relpath(os.path.abspath(target), self.base))
        if stored is not None:  # a saved model's own copy
            self.load(target, stored, chain)
            return
        problem = source_file_problem(target)
        if problem is not None:
            hint = " (imports are relative to the importing file)" \
                if problem == "does not exist" else ""
            raise NetError(f"cannot import '{item.path}': {target} {problem}{hint}", item.loc)
        self.load(target, None, chain)

    def _define(self, item: S.FnDef | S.LayerDef | S.ModelDef) -> None:
        name = item.name
        if isinstance(item, S.LayerDef) and not _is_capitalized(name):
            raise SemanticError(f"layer names start with a capital letter: write "
                                f"'{name[:1].upper() + name[1:]}' (lower-case names are "
                                "functions, which have no parameters)", item.loc)
        if isinstance(item, S.FnDef) and _is_capitalized(name):
            raise SemanticError(f"function names start with a lower-case letter "
                                "(capitalized names are layers, which own parameters): "
                                f"write '{name[:1].lower() + name[1:]}', or declare "
                                f"'layer {name}'", item.loc)
        first = self.user_defs.get(name)
        if first is not None:
            raise SemanticError(f"'{name}' is defined twice", item.loc,
                                notes=[("first defined here", first.loc)])
        self.user_defs[name] = item
        table = {S.FnDef: self.prog.fns, S.LayerDef: self.prog.layers,
                 S.ModelDef: self.prog.models}[type(item)]
        table[name] = item

    def _train(self, item: S.TrainDef) -> None:
        first = self.prog.trains.get(item.model)
        if first is not None:
            raise SemanticError(f"model '{item.model}' has two train blocks", item.loc,
                                notes=[("the first is here", first.loc)])
        self.prog.trains[item.model] = item


def load_program(path: str | os.PathLike, text: str | None = None,
                 imports: dict[str, str] | None = None) -> Program:
    """Read `path` (or parse `text` under that name) with its imports, plus the prelude.
    `imports` (a Program's `imports`) gives the text of imported files instead of the disk."""
    p = os.fspath(path)
    loader = _Loader(p, text, imports)
    for item in prelude().items:
        if isinstance(item, S.LayerDef | S.FnDef):
            table = loader.prog.layers if isinstance(item, S.LayerDef) else loader.prog.fns
            table[item.name] = item
    loader.load(p, text, ())
    for name, train in loader.prog.trains.items():
        if name not in loader.prog.models:
            raise SemanticError(f"train block for unknown model '{name}'"
                                f"{suggestion(name, loader.prog.models)}",
                                train.model_loc or train.loc)
    return loader.prog
