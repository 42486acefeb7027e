"""PyTorch Geometric's SumAggregation, GRUAggregation and LCMAggregation on the graphs written by
bench/lcm_speed.rs (same edges), CPU, inference mode. GRU/LCM in PyG pad every node to the largest
in-degree ([N, d_max, F]); configurations whose padded tensor would exceed 4 GiB are reported as
skipped rather than run (they exhaust this machine's memory).

Usage: python3 lcm_pyg.py DIR
"""
import os
import sys
import time

import numpy as np
import torch
from torch_geometric.nn.aggr import GRUAggregation, LCMAggregation, SumAggregation

torch.manual_seed(0)
d = sys.argv[1]
print("impl,graph,nodes,edges,max_in_degree,features,aggregator,ms,medges_per_s")
SIZES = ((10_000, 100_000),) if os.environ.get("LCM_BENCH_GRAPHS") == "small" else ((10_000, 100_000), (100_000, 1_000_000))
for n, e in SIZES:
    for kind in ("uniform", "powerlaw"):
        name = f"{n}_{e}_{kind}"
        ei = torch.from_numpy(np.load(f"{d}/{name}.npy"))
        src, dst = ei[0], ei[1]
        order = torch.argsort(dst, stable=True)  # GRU/LCM aggregation need sorted indices
        src, dst = src[order], dst[order]
        d_max = int(torch.bincount(dst, minlength=n).max())
        for f in (64, 128):
            x = torch.randn(n, f)
            for agg_name, agg in (("sum", SumAggregation()), ("gru", GRUAggregation(f, f)), ("lcm", LCMAggregation(f, f))):
                padded_gib = n * d_max * f * 4 / 2**30
                if agg_name != "sum" and padded_gib > 4:
                    print(f"pyg,{name},{n},{e},{d_max},{f},{agg_name},skipped ({padded_gib:.0f} GiB padding),")
                    continue
                def run():
                    t = time.perf_counter()
                    with torch.inference_mode():
                        agg(x[src], index=dst, dim_size=n)
                    return (time.perf_counter() - t) * 1e3
                run()
                ms = sorted(run() for _ in range(3))[1]
                print(f"pyg,{name},{n},{e},{d_max},{f},{agg_name},{ms:.2f},{e / ms / 1e3:.3f}")
