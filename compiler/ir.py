"""The graph IR: every stage after build_ir reads and writes it.

Takes: calls from build_ir, autodiff, train and the passes (`Graph.input/param/state/const/add`).
Gives: `Graph` (nodes over a `networkx.MultiDiGraph`, edges producer -> consumer keyed by argument
position), `Node` (one primitive application, one output) and `TensorType` (static shape and dtype),
a deterministic topological order, a text printer and a Graphviz printer.

Invariants: a node's `type` is always its primitive's shape rule applied to its inputs' types and
attributes (checked by `verify.verify`); attributes are canonical (negative axes normalised, tuples
not lists) because `add` runs the primitive's `canonicalize` first; node ids grow with creation and
never repeat; the networkx edges mirror `Node.inputs` exactly (change inputs only via `set_inputs`,
`replace_uses` or `remove_nodes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np

from .errors import InternalCompilerError, NetError, SemanticError, ShapeError, SourceLoc

DTYPES = ("f32", "f64", "i32", "bool")
FLOAT_DTYPES = ("f32", "f64")
_NP_DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "bool": np.bool_}
MAX_TENSOR_BYTES = 8 << 30  # one tensor larger than this cannot be allocated on these machines


def np_dtype(dtype: str) -> type:
    """The NumPy scalar type of a netc dtype name."""
    return _NP_DTYPES[dtype]


@dataclass(frozen=True)
class TensorType:
    """A static tensor type: `shape` (tuple of positive ints, () for scalars) and `dtype`."""

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InternalCompilerError(f"unknown dtype {self.dtype!r}")
        shape = tuple(int(d) for d in self.shape)
        if any(d < 0 for d in shape):
            raise InternalCompilerError(f"negative dimension in shape {shape}")
        object.__setattr__(self, "shape", shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # exact: a product of huge dimensions must not wrap

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(np_dtype(self.dtype)).itemsize

    def check_size(self, loc: SourceLoc | None = None) -> TensorType:
        """This type, or a ShapeError at `loc` if one tensor of it could never be allocated."""
        if self.nbytes > MAX_TENSOR_BYTES:
            raise ShapeError(f"{self} needs {self.nbytes / 2**30:.1f} GiB, more than the "
                             f"{MAX_TENSOR_BYTES >> 30} GiB one tensor may take", loc)
        return self

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


class Node:
    """One primitive application. Its value is the node itself (every primitive has one output)."""

    __slots__ = ("id", "op", "inputs", "attrs", "type", "loc", "name")

    def __init__(self, id: int, op: str, inputs: list[Node], attrs: dict, type: TensorType,
                 loc: SourceLoc | None, name: str | None = None):
        self.id = id
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.type = type
        self.loc = loc
        self.name = name

    def __repr__(self) -> str:
        return f"%{self.id}"


LEAF_OPS = ("input", "param", "state", "const", "rng_key")


def _primitive(op: str):
    # Imported lazily: the op families import this module for TensorType.
    from .ops import PRIMITIVES
    prim = PRIMITIVES.get(op)
    if prim is None:
        raise InternalCompilerError(f"unknown primitive {op!r}")
    return prim


class Graph:
    """A dataflow graph of primitive nodes for one model in one mode ("train" or "eval")."""

    def __init__(self, name: str, float_dtype: str = "f32", mode: str = "train"):
        if float_dtype not in FLOAT_DTYPES:
            raise InternalCompilerError(f"float dtype must be f32 or f64, not {float_dtype!r}")
        if mode not in ("train", "eval"):
            raise InternalCompilerError(f"mode must be 'train' or 'eval', not {mode!r}")
        self.name = name
        self.float_dtype = float_dtype
        self.mode = mode
        self.nx = nx.MultiDiGraph()
        self.outputs: dict[str, Node] = {}
        self.losses: dict[str, Node] = {}
        self.updates: dict[str, Node] = {}
        self._nodes: dict[int, Node] = {}
        self._inputs: dict[str, Node] = {}
        self._params: dict[str, Node] = {}
        self._states: dict[str, Node] = {}
        self._rng_key: Node | None = None
        self._next_id = 0
        self._next_stream = 0
        self._order: list[Node] | None = None

    # ------------------------------------------------------------------ views

    @property
    def inputs(self) -> MappingProxyType[str, Node]:
        """Inputs and targets by name (a target has attrs["role"] == "target")."""
        return MappingProxyType(self._inputs)

    @property
    def params(self) -> MappingProxyType[str, Node]:
        return MappingProxyType(self._params)

    @property
    def states(self) -> MappingProxyType[str, Node]:
        return MappingProxyType(self._states)

    @property
    def rng_key_node(self) -> Node | None:
        return self._rng_key

    def node(self, node_id: int) -> Node:
        return self._nodes[node_id]

    def __contains__(self, node: object) -> bool:
        return isinstance(node, Node) and self._nodes.get(node.id) is node

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def next_id(self) -> int:
        """The id the next node will get (nodes with larger ids were created later)."""
        return self._next_id

    def new_stream(self) -> int:
        """A fresh random stream id (one per random call site, in build order: deterministic)."""
        self._next_stream += 1
        return self._next_stream - 1

    # ------------------------------------------------------------------ construction

    def _new(self, op: str, inputs: list[Node], attrs: dict, ttype: TensorType,
             loc: SourceLoc | None, name: str | None) -> Node:
        node = Node(self._next_id, op, list(inputs), attrs, ttype, loc, name)
        self._next_id += 1
        self._nodes[node.id] = node
        self.nx.add_node(node.id, node=node)
        for pos, src in enumerate(node.inputs):
            self.nx.add_edge(src.id, node.id, key=pos)
        self._order = None
        return node

    def _leaf(self, op: str, attrs: dict, loc: SourceLoc | None, name: str | None) -> Node:
        attrs = _primitive(op).canonicalize([], attrs, self.float_dtype)
        return self._new(op, [], attrs, _primitive(op).infer([], attrs), loc, name)

    def input(self, name: str, ttype: TensorType, loc: SourceLoc | None,
              role: str = "input") -> Node:
        """A tensor fed at run time; role "target" marks one needed only for training/eval."""
        if role not in ("input", "target"):
            raise InternalCompilerError(f"input role must be 'input' or 'target', not {role!r}")
        self._check_new_name(name, loc)
        node = self._leaf("input", {"name": name, "shape": ttype.shape, "dtype": ttype.dtype,
                                    "role": role}, loc, name)
        self._inputs[name] = node
        return node

    def param(self, name: str, ttype: TensorType, loc: SourceLoc | None,
              init: tuple[str, dict] = ("glorot_uniform", {}), frozen: bool = False) -> Node:
        """A trainable tensor (dotted name like "fc1.W"); `init` is stored, not interpreted."""
        self._check_new_name(name, loc)
        node = self._leaf("param", {"name": name, "shape": ttype.shape, "dtype": ttype.dtype,
                                    "init": init, "frozen": bool(frozen)}, loc, name)
        self._params[name] = node
        return node

    def state(self, name: str, ttype: TensorType, loc: SourceLoc | None,
              init: tuple[str, dict] = ("zeros", {})) -> Node:
        """A non-trainable tensor kept in the model; gradients never flow into it."""
        self._check_new_name(name, loc)
        node = self._leaf("state", {"name": name, "shape": ttype.shape, "dtype": ttype.dtype,
                                    "init": init}, loc, name)
        self._states[name] = node
        return node

    def const(self, value: float | int | bool | np.ndarray, dtype: str,
              loc: SourceLoc | None) -> Node:
        """A constant; Python scalars give shape ()."""
        if dtype not in DTYPES:
            raise InternalCompilerError(f"unknown dtype {dtype!r}")
        arr = np.array(value, dtype=np_dtype(dtype))
        # f32 rounding of a literal is expected; any other change of value is a bug
        if dtype != "f32" and not np.array_equal(arr, value, equal_nan=dtype == "f64"):
            raise InternalCompilerError(f"constant {value!r} does not fit dtype {dtype}", loc)
        arr.setflags(write=False)
        return self._leaf("const", {"value": arr, "dtype": dtype}, loc, None)

    def rng_key(self, loc: SourceLoc | None) -> Node:
        """The one random key leaf (seed, step), created on first use."""
        if self._rng_key is None:
            self._rng_key = self._leaf("rng_key", {}, loc, None)
        return self._rng_key

    def add(self, op: str, inputs: list[Node], attrs: dict | None, loc: SourceLoc | None, *,
            name: str | None = None) -> Node:
        """Apply primitive `op`: canonicalises attrs and runs its shape rule. A user-facing
        error from the rule (ShapeError, NetTypeError) gets `loc` attached."""
        prim = _primitive(op)
        if op in LEAF_OPS:
            raise InternalCompilerError(f"use Graph.{op}() to create a {op} leaf")
        if prim.arity is not None and len(inputs) != prim.arity:
            raise InternalCompilerError(f"{op} takes {prim.arity} inputs, got {len(inputs)}", loc)
        for x in inputs:
            if x not in self:
                raise InternalCompilerError(f"input {x!r} of {op} is not in graph {self.name}", loc)
        in_types = [x.type for x in inputs]
        try:
            attrs = prim.canonicalize(in_types, dict(attrs or {}), self.float_dtype)
            ttype = prim.infer(in_types, attrs).check_size()
        except NetError as e:
            if e.loc is None:
                e.diagnostics[0].loc = loc
            raise
        return self._new(op, inputs, attrs, ttype, loc, name)

    def _check_new_name(self, name: str, loc: SourceLoc | None) -> None:
        for kind, table in (("input", self._inputs), ("param", self._params),
                            ("state", self._states)):
            if name in table:
                raise SemanticError(f"'{name}' is already declared as {kind}", loc,
                                    notes=[("first declared here", table[name].loc)])

    # ------------------------------------------------------------------ rewriting (for passes)

    def users(self, node: Node) -> list[Node]:
        """Consumers of `node` in creation order (once each, even if they use it twice)."""
        return [self._nodes[i] for i in sorted(set(self.nx.successors(node.id)))]

    def set_inputs(self, node: Node, inputs: list[Node]) -> None:
        """Rewire `node` to new inputs of the same types (the type is re-checked by verify)."""
        self.nx.remove_edges_from(list(self.nx.in_edges(node.id, keys=True)))
        node.inputs = list(inputs)
        for pos, src in enumerate(node.inputs):
            self.nx.add_edge(src.id, node.id, key=pos)
        self._order = None

    def replace_uses(self, old: Node, new: Node) -> None:
        """Make every consumer of `old` (and every output, loss, update) use `new` instead."""
        if old.type != new.type:
            raise InternalCompilerError(f"replacing {old.type} {old!r} by {new.type} {new!r}")
        for user in self.users(old):
            self.set_inputs(user, [new if x is old else x for x in user.inputs])
        for table in (self.outputs, self.losses, self.updates):
            for k, v in table.items():
                if v is old:
                    table[k] = new

    def remove_nodes(self, nodes: list[Node]) -> None:
        """Delete nodes nothing else uses (dead code). Leaves stay registered by role."""
        doomed = {n.id for n in nodes}
        for n in nodes:
            for user in self.nx.successors(n.id):
                if user not in doomed:
                    raise InternalCompilerError(f"removing {n!r} still used by %{user}")
        for n in nodes:
            self.nx.remove_node(n.id)
            del self._nodes[n.id]
            for table in (self._inputs, self._params, self._states):
                if table.get(n.name) is n:
                    del table[n.name]
            if self._rng_key is n:
                self._rng_key = None
        self._order = None

    # ------------------------------------------------------------------ order and printing

    def nodes_in_order(self) -> list[Node]:
        """All nodes, topologically sorted, ties broken by creation id (deterministic)."""
        if self._order is None:
            ids = nx.lexicographical_topological_sort(self.nx)
            self._order = [self._nodes[i] for i in ids]
        return list(self._order)

    def ancestors(self, roots: list[Node]) -> set[int]:
        """Ids of `roots` and everything they depend on."""
        seen: set[int] = set()
        stack = [r.id for r in roots]
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(self.nx.predecessors(i))
        return seen

    def to_text(self) -> str:
        lines = [f"graph {self.name} ({self.float_dtype}, {self.mode})"]
        for n in self.nodes_in_order():
            lines.append(format_node(n))
        for title, table, arrow in (("output", self.outputs, "="), ("loss", self.losses, "="),
                                    ("update", self.updates, "<-")):
            for k, v in table.items():
                lines.append(f"{title} {k} {arrow} {v!r}")
        return "\n".join(lines)

    __str__ = to_text

    def to_dot(self) -> str:
        out = [f'digraph "{self.name}" {{', "  node [shape=box, fontname=monospace];"]
        for n in self.nodes_in_order():
            label = f"%{n.id} {n.op}" + (f" {n.name}" if n.name else "") + f"\\n{n.type}"
            shape = "ellipse" if n.op in LEAF_OPS else "box"
            out.append(f'  n{n.id} [label="{label}", shape={shape}];')
        for src, dst, key in sorted(self.nx.edges(keys=True)):
            out.append(f'  n{src} -> n{dst} [label="{key}"];')
        for title, table in (("output", self.outputs), ("loss", self.losses),
                             ("update", self.updates)):
            for k, v in table.items():
                out.append(f'  "{title} {k}" [shape=plaintext]; n{v.id} -> "{title} {k}";')
        out.append("}")
        return "\n".join(out)


def _fmt_attr(v: Any) -> str:
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            return repr(v.item())
        return f"array{list(v.shape)}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], dict):
        args = ", ".join(f"{k}={a}" for k, a in v[1].items())
        return f"{v[0]}({args})" if args else v[0]
    return str(v)


def format_node(n: Node) -> str:
    """One printed line: `%12 = matmul(%3, %7) {attrs}  f32[64,128]  @file:3:12  # name`."""
    skip = {"name", "shape", "dtype"} if n.op in LEAF_OPS else set()
    attrs = {k: v for k, v in n.attrs.items() if k not in skip}
    if n.op == "const":
        attrs.pop("dtype", None)
    head = f"%{n.id} = {n.op}"
    if n.op in ("input", "param", "state"):
        head += f' "{n.attrs["name"]}"'
    head += "(" + ", ".join(repr(x) for x in n.inputs) + ")"
    if attrs:
        head += " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in attrs.items()) + "}"
    line = f"{head}  {n.type}"
    if n.loc is not None:
        line += f"  @{n.loc}"
    if n.name and n.op not in ("input", "param", "state"):
        line += f"  # {n.name}"
    return line
