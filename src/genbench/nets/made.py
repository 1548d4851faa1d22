"""MADE: a masked autoencoder for distribution estimation (Germain et al., 2015).

An MLP whose weight masks make output block d depend only on inputs 1..d-1 (natural order), so one
pass gives the parameters of every conditional p(x_d | x_<d). Hidden units get degrees 1..D-1 cycled
through the layer; a unit of degree k sees inputs of degree <= k, an output of dimension d sees units of
degree < d. A direct masked input->output connection (as in the paper) helps the first dimensions.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """x (B, D) -> (B, params_per_dim, D): output [:, :, d] depends on x[:, :d] only.

    ``num_classes`` adds a label embedding to the first hidden layer (a bias, so the masks still hold).
    """

    def __init__(self, dim: int, params_per_dim: int, hidden_dims: Sequence[int],
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.dim, self.params_per_dim = dim, params_per_dim
        in_deg = torch.arange(1, dim + 1)
        degrees = [in_deg] + [torch.arange(h) % max(1, dim - 1) + 1 for h in hidden_dims]
        pairs = zip(degrees[:-1], degrees[1:], strict=True)
        self.hidden = nn.ModuleList(MaskedLinear(d_out[:, None] >= d_in[None, :]) for d_in, d_out in pairs)
        out_deg = in_deg.repeat(params_per_dim)  # output unit p * D + d belongs to dimension d
        self.out = MaskedLinear(out_deg[:, None] > degrees[-1][None, :])
        self.direct = MaskedLinear(out_deg[:, None] > in_deg[None, :])
        self.label_bias = nn.Embedding(num_classes, hidden_dims[0]) if num_classes and hidden_dims else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = x
        for i, layer in enumerate(self.hidden):
            h = layer(h)
            if i == 0 and self.label_bias is not None and y is not None:
                h = h + self.label_bias(y)
            h = F.relu(h)
        out = self.out(h) + self.direct(x)
        return out.view(len(x), self.params_per_dim, self.dim)
