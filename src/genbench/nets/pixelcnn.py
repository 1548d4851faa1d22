"""Gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN Decoders").

Two stacks remove the blind spot of the original masked PixelCNN: a vertical stack whose (k//2+1) x k
convolution sees the rows at and above a pixel, fed to the horizontal stack shifted down one row (so
only rows strictly above), and a horizontal stack whose 1 x (k//2+1) convolution sees the pixels to
the left in the same row. Every layer is gated, tanh(a) * sigmoid(b), with a residual connection in the
horizontal stack; a label embedding adds a per-layer bias (Conditional PixelCNN).

Sub-pixels are ordered R -> G -> B, as in PixelRNN/PixelCNN: the feature channels of the horizontal stack
are split in C groups, group c carrying information for colour c. At the current pixel, group c may see
input colours < c (mask "A", first layer) and feature groups <= c (mask "B", all later layers and the
1x1 convolutions), so the output of colour c depends on previous pixels and on colours < c of the
current pixel only.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def channel_groups(n: int, colors: int) -> Tensor:
    """Colour group of each of ``n`` channels: contiguous, near-equal blocks 0..colors-1."""
    return torch.arange(n) * colors // n


def group_mask(out_groups: Tensor, in_groups: Tensor, strict: bool) -> Tensor:
    """(out, in) 0/1 mask letting group c see groups < c (``strict``, mask A) or <= c (mask B)."""
    if strict:
        return (out_groups[:, None] > in_groups[None, :]).float()
    return (out_groups[:, None] >= in_groups[None, :]).float()


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed mask (out, in, kh, kw)."""

    def __init__(self, mask: Tensor) -> None:
        out_ch, in_ch, kh, kw = mask.shape
        super().__init__(in_ch, out_ch, (kh, kw))
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


def _gated_groups(channels: int, colors: int) -> Tensor:
    """Groups of the 2 * channels pre-activations, laid out so that chunk(2) pairs equal groups."""
    g = channel_groups(channels, colors)
    return torch.cat([g, g])


def _gate(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer of both stacks; ``first`` uses mask A and takes the image itself."""

    def __init__(self, in_ch: int, channels: int, kernel: int, colors: int, first: bool,
                 num_classes: int | None) -> None:
        super().__init__()
        self.half, self.first = kernel // 2, first
        in_groups = torch.arange(colors) if first else channel_groups(in_ch, colors)
        out_groups = _gated_groups(channels, colors)
        self.v_conv = nn.Conv2d(in_ch, 2 * channels, (self.half + 1, kernel))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        h_mask = torch.ones(2 * channels, in_ch, 1, self.half + 1)
        h_mask[:, :, 0, -1] = group_mask(out_groups, in_groups, strict=first)  # the current pixel
        self.h_conv = MaskedConv2d(h_mask)
        groups = channel_groups(channels, colors)
        self.h_out = MaskedConv2d(group_mask(groups, groups, strict=False)[:, :, None, None])
        self.label_bias = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        k = self.half
        v_pre = self.v_conv(F.pad(v, (k, k, k, 0)))  # rows i-k..i, columns j-k..j+k
        h_pre = self.h_conv(F.pad(h, (k, 0, 0, 0)))  # row i, columns j-k..j
        h_pre = h_pre + self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])  # shifted: rows < i only
        if self.label_bias is not None and y is not None:
            bv, bh = self.label_bias(y)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + bv, h_pre + bh
        h_new = self.h_out(_gate(h_pre))
        return _gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """Image in [-1, 1] (B, C, H, W) -> (B, C, params_per_subpixel, H, W) autoregressive parameters.

    The parameters of sub-pixel (c, i, j) depend on pixels before (i, j) in raster order and on colours
    < c of pixel (i, j) only.
    """

    def __init__(self, colors: int, params_per_subpixel: int, channels: int = 32, layers: int = 4,
                 kernel: int = 5, head_channels: int = 64, num_classes: int | None = None) -> None:
        super().__init__()
        assert kernel % 2 == 1, "the kernel size must be odd"
        self.colors, self.params, self.half = colors, params_per_subpixel, kernel // 2
        self.layers = nn.ModuleList(
            GatedLayer(colors if i == 0 else channels, channels, kernel, colors, i == 0, num_classes)
            for i in range(layers)
        )
        feat, hid = channel_groups(channels, colors), channel_groups(head_channels, colors)
        out = torch.arange(colors).repeat_interleave(params_per_subpixel)  # unit c * P + p is colour c
        self.head = nn.Sequential(
            nn.ReLU(), MaskedConv2d(group_mask(hid, feat, strict=False)[:, :, None, None]),
            nn.ReLU(), MaskedConv2d(group_mask(out, hid, strict=False)[:, :, None, None]),
        )  # fmt: skip

    @property
    def reach(self) -> int:
        """Receptive field: pixel (i, j) depends on rows i-reach-1..i and columns j-reach..j+reach."""
        return len(self.layers) * self.half

    def _features(self, x: Tensor, y: Tensor | None) -> Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, y)
        return h

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        b, _, height, width = x.shape
        return self.head(self._features(x, y)).view(b, self.colors, self.params, height, width)

    def at(self, x: Tensor, i: int, j: int, y: Tensor | None = None) -> Tensor:
        """The (B, C, params) of pixel (i, j) alone: one full network evaluation on the pixel's receptive
        field (a crop of x; exactly ``forward(x)[..., i, j]``), not cached activations."""
        r0, c0 = max(0, i - self.reach - 1), max(0, j - self.reach)
        crop = x[:, :, r0 : i + 1, c0 : j + self.reach + 1]
        h = self._features(crop, y)[:, :, i - r0 : i - r0 + 1, j - c0 : j - c0 + 1]
        return self.head(h).view(len(x), self.colors, self.params)
