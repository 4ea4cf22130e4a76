"""Generated 16x16 images of four shapes (square, disc, cross, ring), for specs/shapes.train.

Written the way a user writes data for PyTorch: a map-style Dataset returning
(image, label) tuples. Each image is a pure function of (seed, index): a shape
of random size and position, plus Gaussian noise.
"""

import torch
from torch.utils.data import Dataset

SHAPES = ("square", "disc", "cross", "ring")


class Shapes(Dataset):
    num_classes = len(SHAPES)
    channels = 1

    def __init__(self, size: int, seed: int, noise: float, image: int = 16):
        self.size, self.seed, self.noise, self.image = size, seed, noise, image

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label = int(torch.randint(len(SHAPES), (), generator=g))
        n = self.image
        radius = int(torch.randint(3, n // 3 + 1, (), generator=g))
        cy, cx = (int(v) for v in torch.randint(radius, n - radius, (2,), generator=g))
        y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        dy, dx = (y - cy).abs(), (x - cx).abs()
        if SHAPES[label] == "square":
            mask = (dy <= radius) & (dx <= radius)
        elif SHAPES[label] == "disc":
            mask = dy**2 + dx**2 <= radius**2
        elif SHAPES[label] == "cross":
            mask = ((dy <= 1) & (dx <= radius)) | ((dx <= 1) & (dy <= radius))
        else:
            d2 = dy**2 + dx**2
            mask = (d2 <= radius**2) & (d2 >= (radius - 1.5) ** 2)
        img = mask.float() + self.noise * torch.randn(n, n, generator=g)
        return img.unsqueeze(0), label


def shapes(split: str, train_size: int = 4096, val_size: int = 512, noise: float = 0.3):
    """Training and validation images: different seeds, so validation is unseen data."""
    if split == "train":
        return Shapes(train_size, seed=1, noise=noise)
    return Shapes(val_size, seed=2, noise=noise)
