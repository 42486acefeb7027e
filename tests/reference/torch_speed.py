import time, torch, sys
sys.path.insert(0, __file__.rsplit('/', 1)[0])
from reconresnet import ReconResNet
torch.manual_seed(0)
w, b, bs, s = [int(v) for v in sys.argv[1:5]]
net = ReconResNet(w, b)
opt = torch.optim.Adam(net.parameters(), 1e-3)
x = torch.rand(bs, 1, s, s); y = torch.rand(bs, 1, s, s)
for i in range(4):
    t = time.time(); opt.zero_grad(); l = (net(x) - y).abs().mean(); l.backward(); opt.step(); print(f"step {time.time()-t:.3f}s")
