import torch


def plain_sgd(model, lr: float = 0.1, momentum: float = 0.0):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
