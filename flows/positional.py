"""The 2-D sinusoidal position code that conditional flows (AST, CNF) see at every position."""

from __future__ import annotations

import math

import torch


def positional_encoding(channels: int, height: int, width: int) -> torch.Tensor:
    """channels x height x width sinusoids (CFlow-AD's ``positionalencoding2d``, also in the AST
    and paper-001 code): the first half of the channels sin/cos of the column, the second half
    of the row, so a flow can model "normal here" differently from "normal there"."""
    half = channels // 2
    freq = torch.exp(torch.arange(0, half, 2, dtype=torch.float32) * (-math.log(1e4) / half))
    cols = torch.arange(width, dtype=torch.float32)[:, None] * freq  # width x half/2
    rows = torch.arange(height, dtype=torch.float32)[:, None] * freq
    pe = torch.zeros(channels, height, width)
    pe[0:half:2] = torch.sin(cols).T[:, None, :].expand(-1, height, -1)
    pe[1:half:2] = torch.cos(cols).T[:, None, :].expand(-1, height, -1)
    pe[half::2] = torch.sin(rows).T[:, :, None].expand(-1, -1, width)
    pe[half + 1 :: 2] = torch.cos(rows).T[:, :, None].expand(-1, -1, width)
    return pe
