"""Trains inferd's set model (element encoder → aggregator → decoder, `src/models/lcm.rs`) on the
second-minimum task with PyTorch, which is much faster than candle's autograd on a CPU today, and
writes weights with inferd's tensor names (loadable with `--model NAME=FILE`).

The aggregators match inferd's exactly: sum, max (balanced-tree reduction with max), GRU (recurrent
over each set's elements in order, from a zero state) and LCM (balanced tree with the odd element
carried up, learned identity for empty sets, associativity and identity regularisers) with either
operator: `lcm` (⊕(a,b) = lo + MLP([lo; hi]), lo/hi the elementwise min/max) or `lcm-symgru`
(⊕(a,b) = ½[GRU(a;b) + GRU(b;a)]). Task, data and evaluation as in `inferd train graph`.

Usage: python3 train_graph_torch.py --aggregator lcm --steps 20000 --out models/lcm.safetensors
"""
import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


def bits(v):
    return ((v[..., None] >> np.arange(8)) & 1).astype(np.float32)


def batch(rng, sets, lo, hi):
    sizes = rng.integers(lo, hi + 1, sets)
    vals = [rng.integers(0, 256, s) for s in sizes]
    x = bits(np.concatenate(vals))
    seg = np.repeat(np.arange(sets), sizes)
    y = bits(np.array([np.sort(v)[1] for v in vals]))
    return torch.from_numpy(x), torch.from_numpy(seg), torch.from_numpy(y), sizes


class Monoid(nn.Module):
    """⊕ and its learned identity. `sort-mlp` (inferd's `lcm`): a ⊕ b = lo + W2 relu(W1 [lo; hi] + b1) + b2
    with lo = min(a, b), hi = max(a, b) elementwise; the last layer starts at zero, so ⊕ starts as
    the (associative) elementwise min. `gru` (inferd's `lcm-symgru`, PyG's): ½ [GRU(a; b) + GRU(b; a)]."""

    def __init__(self, dim, operator):
        super().__init__()
        self.operator = operator
        if operator == "gru":
            self.gru = nn.GRUCell(dim, dim)
        else:
            self.mlp = nn.ModuleList([nn.Linear(2 * dim, dim), nn.Linear(dim, dim)])
            nn.init.zeros_(self.mlp[1].weight)
            nn.init.zeros_(self.mlp[1].bias)
        self.identity = nn.Parameter(torch.zeros(dim))

    def forward(self, a, b):
        if self.operator == "gru":
            p = a.shape[0]
            h = self.gru(torch.cat([a, b]), torch.cat([b, a]))
            return 0.5 * (h[:p] + h[p:])
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        return lo + self.mlp[1](torch.relu(self.mlp[0](torch.cat([lo, hi], 1))))


def tree_reduce(h, counts, op, empty):
    """counts: per-row number of entries (rows contiguous in h)."""
    counts = counts.copy()
    while (counts > 1).any():
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        left, right, carry, order = [], [], [], []
        npairs = counts // 2
        # vectorised pair/carry indices
        pair_rows = np.repeat(np.arange(len(counts)), npairs)
        pair_k = np.arange(npairs.sum()) - np.repeat(np.cumsum(npairs) - npairs, npairs)
        left = starts[pair_rows] + 2 * pair_k
        right = left + 1
        odd = counts % 2 == 1
        carry = starts[odd] + counts[odd] - 1
        combined = op(h[torch.from_numpy(left)], h[torch.from_numpy(right)])
        carried = h[torch.from_numpy(carry)]
        stacked = torch.cat([combined, carried])
        # row-contiguous order: each row's pairs then its carry
        new_counts = (counts + 1) // 2
        pair_pos = np.cumsum(npairs) - npairs  # index of each row's first pair in `combined`
        carry_pos = len(left) + np.cumsum(odd) - odd
        order = np.empty(new_counts.sum(), dtype=np.int64)
        new_starts = np.concatenate([[0], np.cumsum(new_counts)[:-1]])
        order_pairs_dst = new_starts[pair_rows] + pair_k
        order[order_pairs_dst] = pair_pos[pair_rows] + pair_k
        order[new_starts[odd] + npairs[odd]] = carry_pos[odd]
        h = stacked[torch.from_numpy(order)]
        counts = new_counts
    out = torch.cat([h, empty[None]])
    pick = np.where(counts == 1, np.cumsum(counts) - 1, h.shape[0])
    return out[torch.from_numpy(pick)]


class SetModel(nn.Module):
    def __init__(self, kind, hidden):
        super().__init__()
        self.kind = kind
        self.enc = nn.ModuleList([nn.Linear(8, hidden), nn.Linear(hidden, hidden)])
        self.dec = nn.ModuleList([nn.Linear(hidden, hidden), nn.Linear(hidden, 8)])
        if kind in ("lcm", "lcm-symgru"):
            self.lcm = Monoid(hidden, "gru" if kind == "lcm-symgru" else "sort-mlp")
        if kind == "gru":
            self.gru = nn.GRUCell(hidden, hidden)

    def encode(self, x):
        return self.enc[1](torch.relu(self.enc[0](x)))

    def forward(self, x, seg, counts):
        h = self.encode(x)
        g, f = len(counts), h.shape[1]
        if self.kind == "sum":
            pooled = torch.zeros(g, f).index_add(0, seg, h)
        elif self.kind == "max":
            pooled = tree_reduce(h, counts, torch.maximum, torch.zeros(f))
        elif self.kind in ("lcm", "lcm-symgru"):
            pooled = tree_reduce(h, counts, self.lcm, self.lcm.identity)
        else:  # gru, rows sorted by count descending so that step t is a prefix
            order = np.argsort(-counts, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            state = torch.zeros(g, f)
            for t in range(counts.max()):
                active = int((counts[order] > t).sum())
                idx = torch.from_numpy(starts[order[:active]] + t)
                nxt = self.gru(h[idx], state[:active])
                state = torch.cat([nxt, state[active:]])
            inverse = np.empty(g, dtype=np.int64)
            inverse[order] = np.arange(g)
            pooled = state[torch.from_numpy(inverse)]
        return self.dec[1](torch.relu(self.dec[0](pooled)))

    def inferd_params(self):
        """The parameters under inferd's tensor names (see src/models/lcm.rs and src/models/mod.rs)."""
        s = {}
        for i, l in enumerate(self.enc):
            s[f"enc.{i}.weight"], s[f"enc.{i}.bias"] = l.weight, l.bias
        for i, l in enumerate(self.dec):
            s[f"dec.{i}.weight"], s[f"dec.{i}.bias"] = l.weight, l.bias
        for name, cell in (("agg.lcm.gru", getattr(getattr(self, "lcm", None), "gru", None)), ("agg.gru", getattr(self, "gru", None))):
            if cell is not None:
                s[f"{name}.weight_ih_l0"], s[f"{name}.weight_hh_l0"] = cell.weight_ih, cell.weight_hh
                s[f"{name}.bias_ih_l0"], s[f"{name}.bias_hh_l0"] = cell.bias_ih, cell.bias_hh
        if hasattr(self, "lcm"):
            s["agg.lcm.identity"] = self.lcm.identity
            if self.lcm.operator == "sort-mlp":
                for i, l in enumerate(self.lcm.mlp):
                    s[f"agg.lcm.mlp.{i}.weight"], s[f"agg.lcm.mlp.{i}.bias"] = l.weight, l.bias
        return s

    def inferd_state(self):
        s = {k: v.detach().contiguous().float() for k, v in self.inferd_params().items()}
        code = ["sum", "mean", "max", "gru", "lcm", "lcm-symgru"].index(self.kind)
        s["aggregator_kind"] = torch.tensor([float(code)])
        return s

    @torch.no_grad()
    def load_inferd(self, path):
        """Continues from an inferd model file of the same aggregator and width."""
        t = load_file(path)
        for k, p in self.inferd_params().items():
            p.copy_(t[k])


@torch.no_grad()
def evaluate(model, size, sets=1024, seed=0):
    rng = np.random.default_rng(seed)
    x, seg, y, counts = batch(rng, sets, size, size)
    pred = (model(x, seg, counts) > 0).float()
    return float(((pred == y).all(1)).float().mean())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--aggregator", default="lcm", choices=["sum", "max", "gru", "lcm", "lcm-symgru"])
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--minutes", type=float, default=0, help="stop after this many minutes (0 = no limit)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--assoc-weight", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--init", help="continue from this inferd model file (same aggregator and width)")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    model = SetModel(a.aggregator, a.hidden)
    if a.init:
        model.load_inferd(a.init)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    start = time.time()
    avg = None
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))
        x, seg, y, counts = batch(rng, a.batch, 2, 16)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x, seg, counts), y)
        if hasattr(model, "lcm") and a.assoc_weight > 0:
            h = model.encode(x)
            i = torch.randint(0, h.shape[0], (3, 256))
            A, B, C = h[i[0]], h[i[1]], h[i[2]]
            m = model.lcm
            assoc = ((m(m(A, B), C) - m(A, m(B, C))) ** 2).sum(1).mean()
            ident = ((m(m.identity.expand_as(A), A) - A) ** 2).sum(1).mean()
            loss = loss + a.assoc_weight * (assoc + ident)
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if (step + 1) % 1000 == 0:
            print(f"step {step + 1}: loss {avg:.4f}, size-32 accuracy {100 * evaluate(model, 32, 512, 7):.1f} %, {time.time() - start:.0f} s", flush=True)
            save_file(model.inferd_state(), a.out)
        if a.minutes and time.time() - start > 60 * a.minutes:
            print(f"time limit reached at step {step + 1}", flush=True)
            break
    save_file(model.inferd_state(), a.out)
    accs = ", ".join(f"{n}: {100 * evaluate(model, n, 1024, 1000 + n):.1f} %" for n in (16, 32, 64, 128))
    print(f"wrote {a.out} ({a.aggregator}, {time.time() - start:.0f} s); exact-set accuracy: {accs}")


if __name__ == "__main__":
    main()
