"""train_step.py's netc contender: a case compiled with `netc.compile(file, threads=T)`.

Takes: a `Case` (cases.py), the thread count and the steps per block. Gives: `setup(...)` ->
(parameter count, {contender name: block}), a block being a callable that runs `steps` training
steps and returns when they are done. Per-step cases call `Model.train_step` with the same feeds
each step; loop cases run one native `train_steps` call over `steps` batches gathered by index
(`Model._train_steps`: what `Model.train_steps` and `fit` run once the data has been checked, so
the check of the whole data set is not counted in every block).
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
        data, index = {"x": d["x"], "y": d["y"]}, d["index"]
        m.train_steps(index[:case.batch], **data)  # checks the data once, compiles
        return params, {"netc": lambda: m._train_steps(data, index, case.batch)}
    feeds = {"x": d["x"], "y": d["y"]}

    def block() -> None:
        for _ in range(steps):
            m.train_step(**feeds)
    return params, {"netc": block}
