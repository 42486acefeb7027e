"""LightSB exact sampling in PyTorch (CPU), the same formulas as inferd's: γ logits as one matrix
product of [x², x] with the stacked S/2ε and r/ε, a categorical draw per row, then r_k + S_k x +
sqrt(ε S_k) ξ. Prints the table of bench/lightsb_speed.rs.
"""
import time

import torch

torch.manual_seed(0)
print("impl,dim,components,batch,samples_per_s,us_per_call")
for dim in (2, 64, 512):
    for k in (10, 50, 500):
        log_alpha = torch.rand(k) * 2 - 1
        r = torch.rand(k, dim) * 2 - 1
        S = torch.exp(-torch.rand(k, dim))
        eps = 1.0
        W = torch.cat([S / (2 * eps), r / eps], dim=1).T.contiguous()  # [2D, K]

        @torch.inference_mode()
        def sample(x):
            logits = torch.cat([x * x, x], dim=1) @ W + log_alpha
            comp = torch.multinomial(torch.softmax(logits, dim=1), 1).squeeze(1)
            Sk, rk = S[comp], r[comp]
            return rk + Sk * x + torch.sqrt(eps * Sk) * torch.randn_like(x)

        for batch in (1, 4096):
            x = torch.rand(batch, dim) * 2 - 1
            sample(x)
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < 0.5 or calls < 3:
                sample(x)
                calls += 1
            secs = time.perf_counter() - start
            print(f"torch,{dim},{k},{batch},{calls * batch / secs:.0f},{secs / calls * 1e6:.1f}")
