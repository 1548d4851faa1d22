"""A small UNet (Ronneberger et al., 2015) in the form DDPM uses (Ho et al., 2020): residual blocks with
GroupNorm that add a timestep (and class) embedding, skip connections between the down and up paths, and
optional self-attention at the lowest resolution.

``channel_mults`` gives one level per entry, each level but the last halving the resolution, so the image
sides must be divisible by 2^(levels - 1): 8x8 digits and 28x28 MNIST take up to 3 levels, 32x32 CIFAR 4+.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from genbench.errors import ConfigError
from genbench.nets.time_mlp import TimeEmbedding


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Linear(emb_dim, c_out)
        self.conv2 = nn.Sequential(_norm(c_out), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(h)


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # (B, HW, C) each
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """(x (B, C, H, W), t (B,), y (B,) or None) -> (B, C, H, W)."""

    def __init__(
        self,
        data_shape: tuple[int, ...],
        channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention: bool = False,
        dropout: float = 0.0,
        num_labels: int | None = None,
    ) -> None:
        super().__init__()
        c_img, height, width = data_shape
        factor = 2 ** (len(channel_mults) - 1)
        if height % factor or width % factor:
            raise ConfigError(f"a UNet with {len(channel_mults)} levels needs image sides divisible by "
                              f"{factor}, got {height}x{width}; use fewer channel_mults")
        emb_dim = 4 * channels
        self.embed = TimeEmbedding(emb_dim, num_labels)
        self.inp = nn.Conv2d(c_img, channels, 3, padding=1)
        widths = [channels * m for m in channel_mults]
        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, w, emb_dim, dropout))
                c = w
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, dropout), ResBlock(c, c, emb_dim, dropout)])
        self.mid_attn = Attention(c) if attention else nn.Identity()
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), w, emb_dim, dropout))
                c = w
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, c_img, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start as the zero predictor, as DDPM does
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = nn.functional.silu(self.embed(t, y))
        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid_attn(self.mid[0](h, emb))
        h = self.mid[1](h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        return self.out(h)
