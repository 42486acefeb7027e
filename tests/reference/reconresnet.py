"""ReconResNet in PyTorch, with the module structure of the official `Resnet2Dv2b14` network
(`self.model = nn.Sequential(...)`), so that its `state_dict()` names are the ones inferd loads.

Used as the independent reference for parity tests, for side-by-side benchmarks, and to train the
shipped default weights.
"""
import torch
import torch.nn as nn


class ResidualBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.PReLU(),
            nn.Dropout2d(p=0.2),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch))

    def forward(self, x):
        return x + self.conv_block(x)


class ReconResNet(nn.Module):
    def __init__(self, width=64, res_blocks=14, updown=2, channels=1):
        """`channels` = 1: the official magnitude network (sigmoid output). `channels` = 2: the complex
        denoiser of the unrolled network (real and imaginary parts in and out, linear output)."""
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), nn.InstanceNorm2d(width), nn.PReLU()]
        ch = width
        for _ in range(updown):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.PReLU()]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(res_blocks)]
        for _ in range(updown):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ch // 2), nn.PReLU()]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7)]
        if channels == 1:
            layers.append(nn.Sigmoid())
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def randomise(net, seed):
    """Random weights that exercise every parameter (PReLU slopes and biases too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight") and p.dim() == 1:  # PReLU slope
                p.copy_(torch.rand(p.shape, generator=g) * 0.5)
            elif name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 0.2)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return net
