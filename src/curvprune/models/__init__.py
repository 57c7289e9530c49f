"""Models by name: reference networks, CIFAR ResNets/VGG, MobileNet, ViT, torchvision, timm.

Example:
    >>> import torch
    >>> from curvprune.models import build_model
    >>> model = build_model("lenet300", in_channels=1, num_classes=10, image_size=28)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from curvprune.models.registry import MODELS, ModelInfo, build_model
from curvprune.models.vit import Attention

__all__ = ["MODELS", "Attention", "ModelInfo", "build_model"]
