"""The train stage: extends a train-mode forward graph, in place, into one whole training step.

Takes: the forward graph from build_ir (mode "train": inputs/targets, params with `init`/`frozen`
attrs, states, outputs, losses, model-state `updates`), the resolved `TrainConfig`, and the number
of steps per epoch (the schedules are functions of the step counter and this number).
Gives: `build_step` -> `StepInfo`; the graph gains the objective(s), gradients, clipping, the
learning rate, optimizer updates, and new `g.updates` entries: every trained parameter, every
optimizer state and the step counter, next to the model-state updates already there. Applying a
step is one mechanism: for every (name, node) of `g.updates`, the tensor `name` becomes the value.

Decisions (see also `optim.py` for the update and schedule formulas):
- objective = loss + l1 * sum|w| + l2 * sum w^2 over the step's trained parameters of rank >= 2
  (Keras convention: no 1/2 on l2, so the l2 gradient is 2*l2*w). The objective is what is
  reported and differentiated.
- A parameter is trained when it is not frozen (`param ... frozen` or `cfg.freeze`), belongs to
  the step's group (all parameters for single-loss training) and the step's loss depends on it
  (like torch skipping params whose .grad is None): it gets a gradient and optimizer state; any
  other parameter gets neither and never changes.
- Clipping, when `clip_norm` is set: n = sqrt(sum of every squared gradient element of the step),
  every gradient is multiplied by min(1, clip_norm / (n + 1e-6)) (torch.nn.utils.clip_grad_norm_).
  It happens before weight decay is added, as with torch (clip .grad, then optimizer.step()).
- The step counter is the state "opt.step", i32: counting stays exact to 2^31 steps (an f32
  counter would stall at 2^24), and the runtime uses it directly as the RNG step. Float uses cast
  it to f64. Every step of one batch shares it; it is incremented once per batch.
- Multi-step training (`cfg.steps`): steps run in order on one batch with sequential semantics,
  all inside this one graph. Step k's loss is recomputed from a copy of the forward nodes that
  depend on a parameter already updated by an earlier step (reading the new values) or on a
  random draw (a fresh stream: each step is its own forward pass, as with calling the network
  again in PyTorch); nodes depending on neither are shared. Each step has its own group,
  optimizer, schedule, clip_norm (the train block's clip_norm when the step has none) and state
  ("opt.<step>.<param>.<slot>"); single-loss training names states "opt.<param>.<slot>". The
  model-state updates (`<-`) are those of the first forward pass. Step k differentiates its loss
  with the earlier steps' new values held constant (stop_gradient): alternating training, not
  differentiation through an earlier update (which would make the generator's gradient flow
  through the discriminator's update in a GAN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .autodiff import grad
from .errors import InternalCompilerError, SemanticError
from .ir import LEAF_OPS, Graph, Node, TensorType
from .ops import composites
from .optim import apply_optimizer, learning_rate
from .train_config import OptimizerSpec, ScheduleSpec, TrainConfig

STEP_COUNTER = "opt.step"
CLIP_EPS = 1e-6


@dataclass
class StepPart:
    """One optimizer step of the training step (the only one for single-loss training)."""

    name: str  # "train" for single-loss training, else the step block's name
    loss_name: str
    objective: Node
    params: tuple[str, ...]  # trained parameter names
    grads: dict[str, Node]  # param -> gradient of the objective (before clipping)
    opt_states: tuple[str, ...]
    lr: Node  # f64 scalar


@dataclass
class StepInfo:
    """What `build_step` built: the parts in order, and the counter's state name."""

    parts: list[StepPart]
    counter: str = STEP_COUNTER
    frozen: tuple[str, ...] = field(default_factory=tuple)

    @property
    def trainable(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for p in self.parts:
            seen.update(dict.fromkeys(p.params))
        return tuple(seen)

    @property
    def grads(self) -> dict[str, Node]:
        """Gradient node per trained parameter (the last step's, if several train it)."""
        out: dict[str, Node] = {}
        for p in self.parts:
            out.update(p.grads)
        return out

    @property
    def opt_states(self) -> tuple[str, ...]:
        return tuple(s for p in self.parts for s in p.opt_states) + (self.counter,)

    @property
    def losses(self) -> dict[str, Node]:
        """The objective of each step, by loss name ("loss" for single-loss training)."""
        return {p.loss_name: p.objective for p in self.parts}

    @property
    def lr(self) -> Node:
        return self.parts[0].lr


@dataclass(frozen=True)
class _Plan:
    name: str
    loss: str
    group: tuple[str, ...] | None  # None: every parameter
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    clip_norm: float | None
    prefix: str


def _plans(g: Graph, cfg: TrainConfig) -> list[_Plan]:
    if cfg.steps:
        plans = []
        for s in cfg.steps:
            if s.loss not in g.losses:
                raise SemanticError(f"step '{s.name}' uses loss '{s.loss}', which the model does "
                                    f"not define (losses: {', '.join(g.losses) or 'none'})", s.loc)
            unknown = [p for p in s.params if p not in g.params]
            if unknown:
                raise SemanticError(f"step '{s.name}' lists unknown parameters "
                                    f"{', '.join(unknown)}", s.loc)
            if any(p.loss == s.loss for p in plans):
                raise SemanticError(f"step '{s.name}' trains loss '{s.loss}' like an earlier "
                                    "step; give each step its own loss", s.loc)
            clip = s.clip_norm if s.clip_norm is not None else cfg.clip_norm
            plans.append(_Plan(s.name, s.loss, s.params, s.optimizer, s.schedule, clip,
                               f"opt.{s.name}."))
        return plans
    if "loss" in g.losses:
        loss = "loss"
    elif len(g.losses) == 1:
        loss = next(iter(g.losses))
    elif not g.losses:
        raise SemanticError(f"model '{g.name}' has no loss to train", None)
    else:
        raise SemanticError(f"model '{g.name}' has several named losses "
                            f"({', '.join(g.losses)}) and no plain loss; train it with `step` "
                            "blocks", cfg.locs.get("model"))
    return [_Plan("train", loss, None, cfg.optimizer, cfg.schedule, cfg.clip_norm, "opt.")]


def _rebind(g: Graph, root: Node, subst: dict[int, Node]) -> Node:
    """`root` recomputed with the nodes of `subst` replaced and random draws renewed."""
    needed = g.ancestors([root])
    mapping = dict(subst)
    for n in g.nodes_in_order():
        if n.id not in needed or n.id in mapping or n.op in LEAF_OPS:
            continue
        fresh = "stream" in n.attrs
        if fresh or any(x.id in mapping for x in n.inputs):
            attrs = dict(n.attrs)
            if fresh:
                attrs["stream"] = g.new_stream()
            mapping[n.id] = g.add(n.op, [mapping.get(x.id, x) for x in n.inputs], attrs, n.loc,
                                  name=n.name)
    return mapping.get(root.id, root)


def _objective(g: Graph, loss: Node, weights: list[Node], cfg: TrainConfig) -> Node:
    loc = loss.loc
    obj = loss
    for coef, penalty in ((cfg.l1, composites.l1), (cfg.l2, composites.l2)):
        if coef and weights:
            term = g.add("mul", [penalty(g, weights, loc), g.const(coef, loss.type.dtype, loc)],
                         None, loc)
            obj = g.add("add", [obj, term], None, loc)
    return obj


def add_penalties(g: Graph, loss: Node, cfg: TrainConfig) -> Node:
    """The objective for reporting in eval mode: `loss` plus the l1/l2 terms over every
    non-frozen parameter of rank >= 2 the loss depends on (the training objective's terms)."""
    anc = g.ancestors([loss])
    weights = [p for name, p in g.params.items() if p.type.rank >= 2 and p.id in anc
               and not (p.attrs["frozen"] or name in cfg.freeze)]
    return _objective(g, loss, weights, cfg)


def _clip(g: Graph, grads: dict[str, Node], clip_norm: float) -> dict[str, Node]:
    items = list(grads.items())
    if not items:
        return grads
    loc = items[0][1].loc
    total = None
    for _, d in items:
        sq = g.add("sum", [g.add("mul", [d, d], None, loc)], {"axes": None}, loc)
        total = sq if total is None else g.add("add", [total, sq], None, loc)
    dt = total.type.dtype
    norm = g.add("sqrt", [total], None, loc)
    coef = g.add("div", [g.const(clip_norm, dt, loc),
                         g.add("add", [norm, g.const(CLIP_EPS, dt, loc)], None, loc)], None, loc)
    coef = g.add("minimum", [coef, g.const(1.0, dt, loc)], None, loc)
    return {name: g.add("mul", [d, coef], None, d.loc) for name, d in items}


def build_step(g: Graph, cfg: TrainConfig, *, steps_per_epoch: int) -> StepInfo:
    """Extend the train-mode forward graph `g` in place into the whole training step."""
    if g.mode != "train":
        raise InternalCompilerError(f"build_step needs a train-mode graph, got {g.mode}")
    if steps_per_epoch < 1:
        raise InternalCompilerError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    for name in g.updates:
        if name not in g.states:
            raise InternalCompilerError(f"forward graph updates {name!r}, which is not a state")
    plans = _plans(g, cfg)
    loc = next(iter(g.losses.values())).loc
    frozen = tuple(n for n, p in g.params.items() if p.attrs["frozen"] or n in cfg.freeze)
    counter = g.state(STEP_COUNTER, TensorType((), "i32"), loc)
    t0 = g.add("cast", [counter], {"dtype": "f64"}, loc)
    t1 = g.add("add", [t0, g.const(1.0, "f64", loc)], None, loc)
    current: dict[str, Node] = dict(g.params)  # each param's value as the next step sees it
    updated: dict[int, Node] = {}  # param leaf id -> its newest value
    new_states: dict[str, Node] = {}
    parts: list[StepPart] = []
    for plan in plans:
        loss = g.losses[plan.loss]
        # Earlier steps' new values enter as constants: no differentiating through their updates
        held = {pid: g.add("stop_gradient", [v], None, v.loc) for pid, v in updated.items()}
        reads = {n: held.get(p.id, p) for n, p in g.params.items()}
        if parts:
            loss = _rebind(g, loss, held)
        anc = g.ancestors([loss])
        group = plan.group if plan.group is not None else tuple(g.params)
        names = [n for n in group if n not in frozen and reads[n].id in anc]
        weights = [reads[n] for n in names if reads[n].type.rank >= 2]
        obj = _objective(g, loss, weights, cfg)
        by_id = grad(g, obj, [reads[n] for n in names])
        grads = {n: by_id[reads[n].id] for n in names}
        clipped = _clip(g, grads, plan.clip_norm) if plan.clip_norm else grads
        lr = learning_rate(g, t0, float(plan.optimizer.args["lr"]), plan.schedule,
                           steps_per_epoch=steps_per_epoch, epochs=cfg.epochs, loc=loc)
        states: list[str] = []
        for n in names:
            w_new, slot_values = apply_optimizer(g, plan.optimizer, reads[n], clipped[n], lr,
                                                 t1, f"{plan.prefix}{n}.", reads[n].loc or loc)
            current[n] = w_new
            updated[g.params[n].id] = w_new
            new_states.update(slot_values)
            states.extend(slot_values)
        parts.append(StepPart(plan.name, plan.loss, obj, tuple(names), grads, tuple(states), lr))
    for n, v in current.items():
        if v is not g.params[n]:
            g.updates[n] = v
    g.updates.update(new_states)
    g.updates[STEP_COUNTER] = g.add("add", [counter, g.const(1, "i32", loc)], None, loc)
    return StepInfo(parts, STEP_COUNTER, frozen)
