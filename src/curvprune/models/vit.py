"""A small Vision Transformer (Dosovitskiy et al. 2021) for CIFAR-sized images.

Attention follows timm's layout (``qkv``, ``proj``, ``num_heads``, ``head_dim``) so that
Torch-Pruning can remove whole heads: after pruning it rewrites ``num_heads``/``head_dim`` and
`Attention.forward` reads them instead of assuming ``dim // num_heads``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curvprune.errors import InvalidArgument


class Attention(nn.Module):
    """Multi-head self-attention: ``proj(softmax(q k^T / sqrt(head_dim)) v)``.

    Args:
        dim: Token width.
        num_heads: Heads; ``dim`` must be divisible by it.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, dim) tokens -> (B, N, dim)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # unbind, not indexing: Torch-Pruning maps heads through it
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch embedding, class token, learned position embedding, blocks, head on the class token.

    Args:
        in_channels: Input channels.
        num_classes: Output logits.
        image_size: Input side length; must be divisible by ``patch_size``.
        patch_size: Side length of a patch.
        dim: Token width.
        depth: Number of blocks.
        num_heads: Attention heads per block.
        mlp_dim: Hidden width of the MLPs.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise InvalidArgument(f"image_size {image_size} is not divisible by patch {patch_size}")
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_tiny(*, in_channels: int, num_classes: int, image_size: int) -> VisionTransformer:
    """ViT-Tiny: dim 192, depth 12, 3 heads, MLP 768; patch 4 up to 64 px, else 16."""
    return VisionTransformer(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        patch_size=4 if image_size <= 64 else 16,
        dim=192,
        depth=12,
        num_heads=3,
        mlp_dim=768,
    )
