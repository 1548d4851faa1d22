"""Networks the families build from: MLPs and a two-stage conv encoder/decoder here, and in the modules
beside them DCGAN, U-Net and time-conditioned MLP, MADE, gated PixelCNN, flow layers and the dataset
classifier. Several families share a backbone where they need the same thing (the VAE and EBM the conv
encoder, diffusion and flow matching the U-Net and time MLP); each family picks its own."""

from genbench.nets.conv import ConvDecoder, ConvEncoder
from genbench.nets.mlp import MLP

__all__ = ["MLP", "ConvDecoder", "ConvEncoder"]
