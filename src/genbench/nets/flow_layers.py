"""Invertible layers of RealNVP (Dinh et al., 2017) and Glow (Kingma & Dhariwal, 2018).

Every layer maps ``x`` to ``(y, logdet)`` in ``forward``, where ``logdet`` (N,) is log |det dy/dx| per
example, and back in ``inverse``. Layers act on vectors (N, D) and on images (N, C, H, W) alike: the
"channel" axis is dim 1 in both, and image log-determinants count every pixel position.
"""

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genbench.errors import ConfigError


def _positions(x: Tensor) -> int:
    """Pixel positions sharing one per-channel transform (1 for vectors)."""
    return x[0, 0].numel()


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel parameter over ``x``: (1, C) or (1, C, 1, 1)."""
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """``bound * tanh(x / bound)``: about ``x`` near 0, never past +-bound (a stable log-scale)."""
    return bound * torch.tanh(x / bound)


def channel_statistics(values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (unbiased) of each row of ``values`` (C, N); under torch.distributed,
    of the rows of every process together (each process holds another batch). Fewer than 2 values (a
    batch of one vector) have no standard deviation: a ConfigError, where NaN scales had read as a
    divergence at step 0 with the advice to lower the learning rate."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        _require_two(values.shape[1])
        return values.mean(1), values.std(1)
    total, count = values.sum(1), torch.tensor(float(values.shape[1]), device=values.device)
    dist.all_reduce(total)
    dist.all_reduce(count)
    _require_two(int(count.item()))
    mean = total / count
    squares = (values - mean[:, None]).pow(2).sum(1)
    dist.all_reduce(squares)
    return mean, (squares / (count - 1)).sqrt()


def _require_two(count: int) -> None:
    if count < 2:
        raise ConfigError(f"ActNorm initializes each channel from the first training batch's mean and "
                          f"standard deviation, which need 2 values per channel; that batch gave {count}: "
                          "give dataset.batch_size=2 or more")


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + loc) * exp(log_scale)`` (Glow).

    Initialized from the first training batch so that every channel of ``y`` has zero mean and unit
    variance; until then (and when loaded from a checkpoint, which stores the flag) it is as saved. Under
    DDP the first batches of all processes together: DDP syncs parameters only when it wraps the model, so
    an init from each process's own batch left the replicas different for the whole run.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._known_initialized = False  # the flag as last read on the host

    @torch.no_grad()
    def _init_from(self, x: Tensor) -> None:
        mean, std = channel_statistics(x.transpose(0, 1).flatten(1))
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)
        self._known_initialized = True

    def _is_initialized(self) -> bool:
        """The flag, read from its device until it is true, then known on the host: reading a GPU buffer
        makes the host wait for every kernel queued before it, and a flow's ActNorms are read at every
        training step (48 waits per step of the CIFAR-10 flow)."""
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False  # the loaded flag is read again

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self._is_initialized():
            self._init_from(x)
        shape = _channel_shape(x)
        y = (x + self.loc.view(shape)) * self.log_scale.exp().view(shape)
        return y, self.log_scale.sum().expand(len(x)) * _positions(x)

    def inverse(self, y: Tensor) -> Tensor:
        shape = _channel_shape(y)
        return y * torch.exp(-self.log_scale).view(shape) - self.loc.view(shape)


class InvertibleLinear(nn.Module):
    """Learned invertible channel mixing, Glow's invertible 1x1 convolution (a dense map for vectors).

    LU-parameterized, ``W = P L (U + diag(sign * exp(log_s)))``, so log |det W| = sum(log_s) costs O(C);
    starts from a random rotation.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = upper.diagonal()
        self.register_buffer("perm", p)
        self.register_buffer("sign", s.sign())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(s.abs().log())

    def weight(self) -> Tensor:
        eye = torch.eye(len(self.sign), device=self.sign.device, dtype=self.log_s.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_s.exp())
        return self.perm @ lower @ upper

    @staticmethod
    def _mix(x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(x, w[:, :, None, None]) if x.dim() == 4 else x @ w.T

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(x, self.weight()), self.log_s.sum().expand(len(x)) * _positions(x)

    def inverse(self, y: Tensor) -> Tensor:
        return self._mix(y, torch.linalg.inv(self.weight()))


class Permutation(nn.Module):
    """A fixed channel permutation, volume preserving: ``reverse`` (RealNVP's alternating halves) or a
    random ``shuffle``."""

    def __init__(self, channels: int, kind: str = "reverse") -> None:
        super().__init__()
        order = torch.arange(channels - 1, -1, -1) if kind == "reverse" else torch.randperm(channels)
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.order], x.new_zeros(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return y[:, self.inverse_order]


class AffineCoupling(nn.Module):
    """``y_b = x_b * s(x_a) + t(x_a)``, ``y_a = x_a``: triangular Jacobian, log-det sum(log s).

    ``x_a`` is the first half of the channels. The log-scale is bounded for stability: soft-clamped
    with tanh to +-``scale_bound``, or Glow's ``s = sigmoid(h + 2)`` (``scale="sigmoid"``). The net's
    last layer is zero-initialized (see :func:`zero_init`), so the coupling starts as the identity.
    """

    def __init__(self, channels: int, make_net: Callable[[int, int], nn.Module], scale: str = "tanh",
                 scale_bound: float = 2.0) -> None:
        super().__init__()
        self.split = channels // 2
        self.net = make_net(self.split, 2 * (channels - self.split))
        self.scale, self.scale_bound = scale, scale_bound

    def _log_scale_shift(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        h, shift = self.net(x_a).chunk(2, dim=1)
        if self.scale == "sigmoid":
            return F.logsigmoid(h + 2.0), shift
        return soft_clamp(h, self.scale_bound), shift

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        log_s, shift = self._log_scale_shift(x_a)
        y_b = x_b * log_s.exp() + shift
        return torch.cat([x_a, y_b], 1), log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y[:, : self.split], y[:, self.split :]
        log_s, shift = self._log_scale_shift(y_a)
        return torch.cat([y_a, (y_b - shift) * torch.exp(-log_s)], 1)


class Squeeze(nn.Module):
    """(N, C, H, W) -> (N, 4C, H/2, W/2): each 2x2 patch becomes 4 channels (RealNVP), volume preserving."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, 2), x.new_zeros(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)


class Split(nn.Module):
    """Multi-scale factor-out with Glow's learned prior: half the channels leave the flow.

    The kept half ``h`` goes on; the other is standardized given it, ``z = (x_b - mu(h)) / sigma(h)``, so
    every latent is standard normal in the end (log-det ``-sum log sigma``).
    """

    def __init__(self, channels: int, make_net: Callable[[int, int], nn.Module], scale_bound: float = 2.0
                 ) -> None:
        super().__init__()
        self.keep = channels // 2
        self.net = make_net(self.keep, 2 * (channels - self.keep))
        self.scale_bound = scale_bound

    def _mean_log_std(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(h).chunk(2, dim=1)
        return mean, soft_clamp(log_std, self.scale_bound)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` -> (kept half, standardized factored-out half, logdet)."""
        h, x_b = x[:, : self.keep], x[:, self.keep :]
        mean, log_std = self._mean_log_std(h)
        return h, (x_b - mean) * torch.exp(-log_std), -log_std.flatten(1).sum(1)

    def inverse(self, h: Tensor, z: Tensor) -> Tensor:
        mean, log_std = self._mean_log_std(h)
        return torch.cat([h, z * log_std.exp() + mean], 1)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the last conv/linear layer of ``module`` so a coupling or prior starts as the identity."""
    last = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return module


def conv_coupling_net(hidden: int) -> Callable[[int, int], nn.Module]:
    """Glow's coupling network: 3x3 conv, 1x1 conv, zero-initialized 3x3 conv, ReLU in between."""

    def make(in_channels: int, out_channels: int) -> nn.Module:
        return zero_init(nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        ))  # fmt: skip

    return make
