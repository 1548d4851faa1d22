"""The evaluation stage runs where the model trained, in batches sized for that device, and streams its
samples through the feature networks instead of holding them all."""

import torch

from genbench.evaluation.quality import sample_features
from genbench.evaluation.stage import batch_size_for


class _CountingExtractor:
    """Features = per-image pixel mean and max; records the size of every batch it sees."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def extract(self, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(len(images))
        x = images.float().flatten(1)
        return torch.stack([x.mean(1), x.amax(1)], 1), x[:, :3]


class _Model:
    """Samples images from a seeded stream; records how many it handed out per call."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)
        self.calls: list[int] = []

    def sample(self, n: int) -> torch.Tensor:
        self.calls.append(n)
        return torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=self.generator)


def test_samples_stream_through_the_extractors_batch_by_batch():
    model, extractor = _Model(), _CountingExtractor()
    out, shown = sample_features(model, [extractor], n=1050, batch_size=200, feature_batch_size=64, keep=10)
    # Never more than one batch of samples alive: each goes through the extractor as it is drawn.
    assert model.calls == [200] * 5 + [50] and extractor.calls == model.calls
    features, logits = out["counting"]
    assert features.shape == (1050, 2) and logits.shape == (1050, 3)
    # The same numbers as drawing every image first and extracting them at once.
    everything = _Model().sample(1050)
    expected = _CountingExtractor().extract(everything)
    assert torch.equal(features, expected[0]) and torch.equal(logits, expected[1])
    assert torch.equal(shown, everything[:10])


def test_batch_sizes_fill_a_gpu_and_stay_small_on_a_cpu():
    assert batch_size_for(torch.device("cpu"), None, cpu=500, gpu=2000) == 500
    assert batch_size_for(torch.device("cuda", 0), None, cpu=500, gpu=2000) == 2000
    assert batch_size_for(torch.device("cuda", 0), 32, cpu=500, gpu=2000) == 32  # a setting wins
