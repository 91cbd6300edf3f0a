"""PyTorch twin of the d2l.ai GoogLeNet (same layers, shapes and FLOPs as
googlenet_jax.GoogLeNet(variant="d2l")), for benchmarking only.

Requires torch; importing this module without it raises ImportError.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# (c1, (c2 reduce, c2), (c3 reduce, c3), c4), as googlenet_jax.models.INCEPTION_BLOCKS.
BLOCKS_3 = ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64))
BLOCKS_4 = ((192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64),
            (128, (128, 256), (24, 64), 64), (112, (144, 288), (32, 64), 64),
            (256, (160, 320), (32, 128), 128))
BLOCKS_5 = ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128))


class Inception(nn.Module):

  def __init__(self, in_channels: int, c1: int, c2, c3, c4: int):
    super().__init__()
    self.b1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
    self.b2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
    self.b2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
    self.b3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
    self.b3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
    self.b4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
    self.b4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)

  def forward(self, x):
    b1 = F.relu(self.b1_1(x))
    b2 = F.relu(self.b2_2(F.relu(self.b2_1(x))))
    b3 = F.relu(self.b3_2(F.relu(self.b3_1(x))))
    b4 = F.relu(self.b4_2(self.b4_1(x)))
    return torch.cat((b1, b2, b3, b4), dim=1)


def _stage(in_channels: int, blocks, pool: bool) -> tuple[nn.Sequential, int]:
  layers = []
  for c1, c2, c3, c4 in blocks:
    layers.append(Inception(in_channels, c1, c2, c3, c4))
    in_channels = c1 + c2[1] + c3[1] + c4
  if pool:
    layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
  return nn.Sequential(*layers), in_channels


def d2l_googlenet(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
  """d2l.ai section 8.4 GoogLeNet (NCHW input), Xavier-uniform weights, zero biases."""
  b1 = nn.Sequential(nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(),
                     nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
  b2 = nn.Sequential(nn.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
                     nn.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(),
                     nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
  b3, c = _stage(192, BLOCKS_3, pool=True)
  b4, c = _stage(c, BLOCKS_4, pool=True)
  b5, c = _stage(c, BLOCKS_5, pool=False)
  net = nn.Sequential(b1, b2, b3, b4, b5, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                      nn.Linear(c, num_classes))
  for m in net.modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
      nn.init.xavier_uniform_(m.weight)
      nn.init.zeros_(m.bias)
  return net
