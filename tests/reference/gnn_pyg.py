"""PyTorch Geometric reference for inferd's message-passing stack: encoder (2 linear layers, ReLU
between) → L × SAGEConv (root weight, aggregation sum/mean/max) with ReLU → decoder (2 linear
layers). SAGEConv computes lin_l(agg_j x_j) + lin_r(x_i); inferd's layer is W_nbr agg + b_nbr +
W_self x + b_self, so lin_l maps to `nbr` and lin_r (no bias) to `self` with a zero bias.

Writes, per aggregation, `{aggr}.safetensors` (weights under inferd's names, output_kind identity)
and `{aggr}-io.safetensors` (x, edge_index, PyG's output) into the folder given as argument.
"""
import sys

import torch
from safetensors.torch import save_file
from torch import nn
from torch_geometric.nn import SAGEConv

out_dir = sys.argv[1]
torch.manual_seed(0)
F, H, OUT, LAYERS, N = 6, 16, 3, 2, 60

# Random graph with isolated nodes, self-loops and duplicate edges.
g = torch.Generator().manual_seed(1)
src = torch.randint(0, N, (300,), generator=g)
dst = torch.randint(0, N - 5, (300,), generator=g)  # the last 5 nodes receive nothing
src = torch.cat([src, torch.tensor([3, 3, 7])])
dst = torch.cat([dst, torch.tensor([3, 9, 9])])
edge_index = torch.stack([src, dst])
x = torch.randn(N, F, generator=g)

for code, aggr in ((0.0, "sum"), (1.0, "mean"), (2.0, "max")):
    enc = nn.ModuleList([nn.Linear(F, H), nn.Linear(H, H)])
    convs = nn.ModuleList([SAGEConv(H, H, aggr=aggr) for _ in range(LAYERS)])
    dec = nn.ModuleList([nn.Linear(H, H), nn.Linear(H, OUT)])
    with torch.no_grad():
        h = enc[1](torch.relu(enc[0](x)))
        for c in convs:
            h = torch.relu(c(h, edge_index))
        y = dec[1](torch.relu(dec[0](h)))
    w = {}
    for i, l in enumerate(enc):
        w[f"enc.{i}.weight"], w[f"enc.{i}.bias"] = l.weight, l.bias
    for i, l in enumerate(dec):
        w[f"dec.{i}.weight"], w[f"dec.{i}.bias"] = l.weight, l.bias
    for i, c in enumerate(convs):
        w[f"gnn.{i}.nbr.weight"], w[f"gnn.{i}.nbr.bias"] = c.lin_l.weight, c.lin_l.bias
        w[f"gnn.{i}.self.weight"] = c.lin_r.weight
        w[f"gnn.{i}.self.bias"] = torch.zeros(H)
    w = {k: v.detach().contiguous().float() for k, v in w.items()}
    w["aggregator_kind"] = torch.tensor([code])
    w["output_kind"] = torch.tensor([1.0])
    save_file(w, f"{out_dir}/{aggr}.safetensors")
    save_file({"x": x.contiguous(), "edge_index": edge_index.contiguous(), "y": y.contiguous()},
              f"{out_dir}/{aggr}-io.safetensors")
