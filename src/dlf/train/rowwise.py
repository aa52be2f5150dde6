"""Row-wise Adagrad for embedding tables with sparse gradients (TorchRec / FBGEMM's EXACT_ROWWISE_ADAGRAD).

Adagrad keeps one accumulator per weight; the row-wise variant keeps one per table row, the mean of the
squared gradient over the row's d entries:

    s_i <- s_i + mean_j(g_ij^2)            (rows i in the batch only)
    w_i <- w_i - lr * g_i / (sqrt(s_i) + eps)

so the optimiser state is V floats instead of V x d (Adam: 2 V x d). For a 1M x 64 table that is 4 MB
instead of 256 MB (Adagrad) or 512 MB (Adam), and a step reads and writes only the batch's rows.
"""
from __future__ import annotations

import torch


class RowWiseAdagrad(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.01, eps: float = 1e-8):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.dim() != 2:
                    raise ValueError(f"RowWiseAdagrad updates 2-d tables (rows x d); got a tensor of shape "
                                     f"{tuple(p.shape)}")
                state = self.state[p]
                if not state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)  # s: V
                if not p.grad.is_sparse:
                    raise ValueError("RowWiseAdagrad needs sparse gradients (train.sparse_embedding=true)")
                grad = p.grad.coalesce()  # each row once: duplicate lookups summed
                rows, values = grad.indices()[0], grad.values()  # n, n x d
                if rows.numel() == 0:
                    continue
                acc = state["sum"].index_add_(0, rows, values.float().pow(2).mean(1))[rows]  # s_i for the batch's rows
                step = values / (acc.sqrt() + group["eps"]).unsqueeze(1).to(values.dtype)  # g_i / (sqrt(s_i) + eps)
                p.index_add_(0, rows, step, alpha=-group["lr"])
        return loss
