"""Datasets as a user writes them."""

import torch
from torch.utils.data import Dataset, IterableDataset


class Blobs(Dataset):
    """Points in 8 dimensions; the class is how many of the first two coordinates are positive."""

    in_features = 8
    classes = 3

    def __init__(self, size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def blobs(split: str, size: int = 256):
    return Blobs(size if split == "train" else 64, 0 if split == "train" else 1)


class DictBlobs(Blobs):
    model_info = {"num_features": 8}

    def __getitem__(self, i):
        return {"features": self.x[i], "targets": self.y[i]}


def dict_blobs(size: int = 256):
    return DictBlobs(size, 0), DictBlobs(64, 1)


class Stream(IterableDataset):
    in_features = 8
    classes = 3

    def __init__(self, size: int):
        self.blobs = Blobs(size, 0)

    def __iter__(self):
        for i in range(len(self.blobs)):
            yield self.blobs[i]


def stream(size: int = 128):
    return {"train": Stream(size), "val": Stream(32)}


class Faulty(Blobs):
    def __getitem__(self, i):
        if i % 7 == 3:
            raise ValueError(f"sample {i} is corrupt")
        return super().__getitem__(i)


def faulty():
    return Faulty(64, 0)
