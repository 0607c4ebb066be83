"""train_step.py's netc contender: a case compiled with `netc.compile(file, threads=T)`.

Takes: a `Case` (cases.py), the thread count and the steps per block. Gives: `setup(...)` ->
(parameter count, {contender name: block}), a block being a callable that runs `steps` training
steps and returns when they are done. Per-step cases call `Model.train_step` with the same feeds
each step; loop cases run one native `train_steps` call over `steps` batches gathered by index
(the runtime's native loop entry, `JitEngine.train_steps`; Model has no public wrapper yet).
"""

from __future__ import annotations

from collections.abc import Callable

from cases import Case, case_data


def setup(case: Case, threads: int, steps: int) -> tuple[int, dict[str, Callable[[], None]]]:
    import netc

    m = netc.compile(case.path, threads=threads, seed=0, batch=case.batch)
    params = sum(int(a.size) for a in m.params.values())
    d = case_data(case, steps)
    if case.loop:
        eng, _ = m._engine("train", None)
        data, index = {"x": d["x"], "y": d["y"]}, d["index"]
        return params, {"netc": lambda: eng.train_steps(data, index)}
    feeds = {"x": d["x"], "y": d["y"]}

    def block() -> None:
        for _ in range(steps):
            m.train_step(**feeds)
    return params, {"netc": block}
