"""Transformer pieces of ReCon, laid out so the official checkpoints map onto them one to one."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability p (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.p
        return x * keep / (1.0 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v. Exported to ONNX as those three ops with the scale a constant
    (the head size is fixed): the exporter's decomposition of scaled_dot_product_attention computes
    the scale from the runtime shape in each of the model's attentions, a few dozen tiny nodes in all
    that cost a batch-1 call more than their arithmetic."""
    if torch.onnx.is_in_onnx_export():
        return torch.softmax((q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5), dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention (no qkv bias, as the paper)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class CrossAttention(nn.Module):
    """Queries x attend to keys/values y."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y):
        B, M, C = x.shape
        N = y.shape[1]
        h = self.heads
        q = self.q(x).reshape(B, M, h, C // h).transpose(1, 2)
        k, v = self.kv(y).reshape(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, M, C))


class Block(nn.Module):
    """A plain transformer block (used by the reconstruction decoder)."""

    def __init__(self, dim: int, heads: int, drop_path: float = 0.0, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ReConBlock(nn.Module):
    """The ReCon block: local tokens self-attend; global queries cross-attend to the local tokens.

    The global queries see the local tokens through `detach()` when `stop_grad` is on, so the
    contrastive (teacher) losses on the queries never push gradients into the local encoder: the
    encoder learns from reconstruction alone, the queries learn from contrast. The update order
    (normalise, then add the residual to the normalised stream) follows the official code so that
    official checkpoints reproduce the paper's model.
    """

    def __init__(self, dim: int, heads: int, num_queries: int, drop_path: float = 0.0, mlp_ratio: float = 4.0):
        super().__init__()
        self.num_queries = num_queries
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)
        self.norm1_query = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2_query = nn.LayerNorm(dim)
        self.mlp_query = Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, stop_grad: bool = True):
        q, tokens = x[:, : self.num_queries], x[:, self.num_queries :]
        q = self.norm1_query(q)
        tokens = self.norm1(tokens)
        context = tokens.detach() if stop_grad else tokens
        q = q + self.drop_path(self.cross_attn(q, context))
        tokens = tokens + self.drop_path(self.attn(tokens))
        q = self.norm2_query(q)
        tokens = self.norm2(tokens)
        q = q + self.drop_path(self.mlp_query(q))
        tokens = tokens + self.drop_path(self.mlp(tokens))
        return torch.cat((q, tokens), dim=1)
