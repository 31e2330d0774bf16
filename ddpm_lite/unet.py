import math

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lite.guidance import NULL_LABEL, check_labels

def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    "Transformer-style features of the step index: [sin(t w_k), cos(t w_k)], w_k = max_period^(-k/(dim/2))."
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)

class Conditioning(nn.Module):
    "One vector per image from its step t and label y: MLP(sinusoidal(t)) + E[y], with row NULL_LABEL = 'no label'."
    def __init__(self, dim: int, num_labels: int = NULL_LABEL + 1):
        super().__init__()
        self.dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label_emb = nn.Embedding(num_labels, dim)

    def forward(self, t, y):
        return self.time_mlp(sinusoidal_embedding(t, self.dim)) + self.label_emb(y)

class _UNetBase(nn.Module):
    "Input checks shared by both U-Nets: clear errors instead of shape errors deep inside a convolution."
    in_channels = 1

    def _check(self, x, t, y):
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"expected images of shape [B, {self.in_channels}, H, W] with H and W divisible "
                             f"by 4 (MNIST: [B, 1, 28, 28]), got {list(x.shape)}.")
        for name, v in (("t", t), ("y", y)):
            if v.shape != (x.shape[0],):
                raise ValueError(f"{name} must hold one entry per image, shape [{x.shape[0]}], got {list(v.shape)}.")
        return check_labels(y)

class PaperBlock(nn.Module):
    "Two 3x3 convolutions (padding 1) with ReLU; the conditioning vector is added after the first."
    def __init__(self, c_in, c_out, emb_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)

    def forward(self, x, emb):
        h = F.relu(self.conv1(x)) + self.emb(emb)[:, :, None, None]
        return F.relu(self.conv2(h))

class PaperUNet(_UNetBase):
    "The paper's U-Net (its section 3.2.1): two blocks per path, max-pool down, transposed conv up, skips."
    def __init__(self, channels=(64, 128, 256), time_dim=128):
        super().__init__()
        c1, c2, c3 = channels
        self.cond = Conditioning(time_dim)
        self.down1, self.down2 = PaperBlock(1, c1, time_dim), PaperBlock(c1, c2, time_dim)
        self.mid = PaperBlock(c2, c3, time_dim)
        self.up2, self.dec2 = nn.ConvTranspose2d(c3, c2, 2, stride=2), PaperBlock(2 * c2, c2, time_dim)
        self.up1, self.dec1 = nn.ConvTranspose2d(c2, c1, 2, stride=2), PaperBlock(2 * c1, c1, time_dim)
        self.out = nn.Conv2d(c1, 1, 1)

    def forward(self, x, t, y):
        y = self._check(x, t, y)
        e = self.cond(t, y)
        h1 = self.down1(x, e)                                 # 28x28, c1
        h2 = self.down2(F.max_pool2d(h1, 2), e)               # 14x14, c2
        h = self.mid(F.max_pool2d(h2, 2), e)                  # 7x7,  c3
        h = self.dec2(torch.cat([self.up2(h), h2], 1), e)     # 14x14, skip from the contracting path
        h = self.dec1(torch.cat([self.up1(h), h1], 1), e)     # 28x28
        return self.out(h)

class ResBlock(nn.Module):
    "GroupNorm -> SiLU -> 3x3 conv, twice, plus the conditioning vector, around a residual connection."
    def __init__(self, c_in, c_out, emb_dim, groups=8):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)   # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h

class SelfAttention(nn.Module):
    "Single-head self-attention over the pixels of a feature map, with a residual connection."
    def __init__(self, c, groups=8):
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(groups, c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)   # each [B, HW, C]
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(h.transpose(1, 2).reshape(B, C, H, W))

class ImprovedUNet(_UNetBase):
    "Our variant: residual GroupNorm/SiLU blocks, strided-conv down, nearest up, optional attention at 7x7."
    def __init__(self, channels=(16, 32, 64), time_dim=64, attention=False):
        super().__init__()
        c1, c2, c3 = channels
        self.cond = Conditioning(time_dim)
        self.stem = nn.Conv2d(1, c1, 3, padding=1)
        self.enc1 = ResBlock(c1, c1, time_dim)
        self.down1, self.enc2 = nn.Conv2d(c1, c1, 3, stride=2, padding=1), ResBlock(c1, c2, time_dim)
        self.down2, self.enc3 = nn.Conv2d(c2, c2, 3, stride=2, padding=1), ResBlock(c2, c3, time_dim)
        self.attn = SelfAttention(c3) if attention else nn.Identity()
        self.mid = ResBlock(c3, c3, time_dim)
        self.up2, self.dec2 = nn.Conv2d(c3, c3, 3, padding=1), ResBlock(c3 + c2, c2, time_dim)
        self.up1, self.dec1 = nn.Conv2d(c2, c2, 3, padding=1), ResBlock(c2 + c1, c1, time_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, 1, 3, padding=1))

    def forward(self, x, t, y):
        y = self._check(x, t, y)
        e = self.cond(t, y)
        h1 = self.enc1(self.stem(x), e)                       # 28x28, c1
        h2 = self.enc2(self.down1(h1), e)                     # 14x14, c2
        h = self.mid(self.attn(self.enc3(self.down2(h2), e)), e)   # 7x7, c3
        h = self.dec2(torch.cat([self.up2(F.interpolate(h, scale_factor=2.0)), h2], 1), e)
        h = self.dec1(torch.cat([self.up1(F.interpolate(h, scale_factor=2.0)), h1], 1), e)
        return self.out(h)

def build_model(cfg) -> nn.Module:
    "The U-Net that a Config asks for."
    if cfg.model == "paper":
        return PaperUNet(tuple(cfg.channels), cfg.time_dim)
    return ImprovedUNet(tuple(cfg.channels), cfg.time_dim, cfg.attention)

def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
