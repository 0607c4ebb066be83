"""train_step.py's PyTorch eager contender: each case as a standard nn.Module and torch.optim.

Takes: a `Case` (cases.py), the thread count and the steps per block. Gives: `setup(...)` ->
(parameter count, {"torch": block}); a block runs `steps` idiomatic steps (zero_grad, forward,
cross-entropy loss, backward, optimizer step). Threads: torch.set_num_threads(T) and one
inter-op thread (the worker process also has OMP/MKL_NUM_THREADS and its CPU affinity set).
Loop cases gather each batch from the resident tensors with index_select.
"""

from __future__ import annotations

from collections.abc import Callable

from cases import Case, case_data


def model(case: Case):
    """The case's network as an nn.Module."""
    from torch import nn

    if case.dims:
        layers: list = []
        for a, b in zip(case.dims, case.dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers[:-1])
    if case.name == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, case.classes))
    if case.name == "lstm":
        class LSTMClassifier(nn.Module):
            def __init__(self, features: int, hidden: int, classes: int):
                super().__init__()
                self.lstm = nn.LSTM(features, hidden, batch_first=True)
                self.head = nn.Linear(hidden, classes)

            def forward(self, x):
                _, (h, _) = self.lstm(x)
                return self.head(h[-1])
        return LSTMClassifier(case.row[-1], case.extra["hidden"], case.classes)
    if case.name == "transformer":
        class BlockClassifier(nn.Module):
            def __init__(self, d: int, heads: int, ff: int, classes: int):
                super().__init__()
                self.block = nn.TransformerEncoderLayer(
                    d, heads, ff, dropout=0.0, activation="gelu", batch_first=True,
                    norm_first=True)
                self.head = nn.Linear(d, classes)

            def forward(self, x):
                return self.head(self.block(x).mean(dim=1))
        return BlockClassifier(case.row[-1], case.extra["heads"], case.extra["ff"],
                               case.classes)
    raise ValueError(f"no PyTorch model for case {case.name!r}")


def optimizer(case: Case, params):
    """The case's optimizer, with PyTorch's defaults for what the case does not set."""
    import torch

    if case.opt == "sgd":
        return torch.optim.SGD(params, lr=case.lr, momentum=case.momentum)
    return torch.optim.Adam(params, lr=case.lr)


def setup(case: Case, threads: int, steps: int) -> tuple[int, dict[str, Callable[[], None]]]:
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    net = model(case).train()
    params = sum(p.numel() for p in net.parameters())
    opt = optimizer(case, net.parameters())
    lossf = torch.nn.CrossEntropyLoss()
    d = case_data(case, steps)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"]).long()

    def step(xb, yb) -> None:
        opt.zero_grad()
        loss = lossf(net(xb), yb)
        loss.backward()
        opt.step()

    if case.loop:
        index = torch.from_numpy(d["index"]).view(steps, case.batch)

        def block() -> None:
            for i in range(steps):
                rows = index[i]
                step(x.index_select(0, rows), y.index_select(0, rows))
    else:
        def block() -> None:
            for _ in range(steps):
                step(x, y)
    return params, {"torch": block}
