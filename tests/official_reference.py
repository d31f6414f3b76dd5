"""Test-only reference of the official qizekun/ReCon maths, written from its published structure.

Module names and shapes follow the official code (models/transformer.py, models/CrossModal.py), so
their state dicts are what an official checkpoint holds; the forwards are written the plain way the
official code computes them (Conv1d patch embedding, explicit softmax attention, nn.MultiheadAttention
in CLIP's text transformer, FPS with pointnet2_ops' CUDA rule). The server's own code shares none of
this, so agreement is evidence, not a tautology. Not a test module: pytest collects nothing here.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---- grouping: pointnet2_ops FPS + the official knn_point ----------------------------------------
def pointnet2_fps(xyz: np.ndarray, npoint: int) -> np.ndarray:
    """furthest_point_sampling_kernel for one cloud: start at 0; a point with x*x+y*y+z*z <= 1e-3 is
    never updated nor chosen; best starts at -1 with index 0 (so a cloud of such points repeats 0)."""
    xyz = xyz.astype(np.float32)
    mag = xyz[:, 0] * xyz[:, 0] + xyz[:, 1] * xyz[:, 1] + xyz[:, 2] * xyz[:, 2]
    live = mag > np.float32(1e-3)
    temp = np.full(len(xyz), 1e10, dtype=np.float32)
    idx, old = [0], 0
    for _ in range(1, npoint):
        d = ((xyz - xyz[old]) ** 2).sum(1, dtype=np.float32)
        temp[live] = np.minimum(temp[live], d[live])
        old = int(np.argmax(np.where(live, temp, -1))) if live.any() else 0
        idx.append(old)
    return np.array(idx)


def official_group(xyz: torch.Tensor, num_group: int, group_size: int):
    """(neighbourhood [B,G,S,3] relative to centres, centres [B,G,3]) as models/transformer.py Group."""
    centre_idx = torch.from_numpy(np.stack([pointnet2_fps(c.numpy(), num_group) for c in xyz]))
    centres = torch.gather(xyz, 1, centre_idx[..., None].expand(-1, -1, 3))
    d = -2 * centres @ xyz.transpose(1, 2) + (centres ** 2).sum(-1)[..., None] + (xyz ** 2).sum(-1)[:, None]
    knn = d.topk(group_size, dim=-1, largest=False, sorted=False).indices
    neigh = torch.gather(xyz[:, None].expand(-1, num_group, -1, -1), 2, knn[..., None].expand(-1, -1, -1, 3))
    return neigh - centres[:, :, None], centres, centre_idx


# ---- the point transformer ----------------------------------------------------------------------
class _Mlp(nn.Module):
    def __init__(s, d, h):
        super().__init__(); s.fc1, s.fc2 = nn.Linear(d, h), nn.Linear(h, d)

    def forward(s, x):
        return s.fc2(F.gelu(s.fc1(x)))


class _Attn(nn.Module):
    def __init__(s, d, h, cross):
        super().__init__(); s.h, s.cross = h, cross
        if cross:
            s.q, s.kv = nn.Linear(d, d, bias=False), nn.Linear(d, 2 * d, bias=False)
        else:
            s.qkv = nn.Linear(d, 3 * d, bias=False)
        s.proj = nn.Linear(d, d)

    def forward(s, x, y=None):
        B, N, C = x.shape
        split = lambda t: t.reshape(B, t.shape[1], s.h, C // s.h).transpose(1, 2)
        if s.cross:
            q = split(s.q(x)); k, v = [split(t) for t in s.kv(y).chunk(2, -1)]
        else:
            q, k, v = [split(t) for t in s.qkv(x).chunk(3, -1)]
        a = (q @ k.transpose(-2, -1) * (C // s.h) ** -0.5).softmax(-1)
        return s.proj((a @ v).transpose(1, 2).reshape(B, N, C))


class _Block(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.norm1, s.norm2, s.norm1_contrast, s.norm2_contrast = (nn.LayerNorm(d) for _ in range(4))
        s.attn, s.attn_contrast = _Attn(d, h, False), _Attn(d, h, True)
        s.mlp, s.mlp_contrast = _Mlp(d, 4 * d), _Mlp(d, 4 * d)

    def forward(s, x):
        c, v = s.norm1_contrast(x[:, :3]), s.norm1(x[:, 3:])
        c = c + s.attn_contrast(c, v)
        v = v + s.attn(v)
        c, v = s.norm2_contrast(c), s.norm2(v)
        return torch.cat([c + s.mlp_contrast(c), v + s.mlp(v)], 1)


class _Blocks(nn.Module):
    def __init__(s, d, h, depth):
        super().__init__(); s.blocks = nn.ModuleList(_Block(d, h) for _ in range(depth))


class OfficialFinetune(nn.Module):
    """PointTransformer (the fine-tune model): tokens -> blocks -> cls_head_finetune on
    [cls, img, text, max of local tokens]."""

    def __init__(s, d=48, h=2, depth=2, classes=4):
        super().__init__()
        s.encoder = nn.Module()
        s.encoder.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 256, 1))
        s.encoder.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(), nn.Conv1d(512, d, 1))
        for n in ("cls_token", "cls_pos", "img_token", "img_pos", "text_token", "text_pos"):
            setattr(s, n, nn.Parameter(torch.randn(1, 1, d) * 0.02))
        s.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, d))
        s.blocks = _Blocks(d, h, depth)
        s.norm = nn.LayerNorm(d)
        if classes:
            s.cls_head_finetune = nn.Sequential(
                nn.Linear(4 * d, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, classes))

    def tokens(s, patches, centres):
        B, G, S, _ = patches.shape
        f = s.encoder.first_conv(patches.reshape(B * G, S, 3).transpose(2, 1))
        f = torch.cat([f.max(2, keepdim=True)[0].expand(-1, -1, S), f], 1)
        tok = s.encoder.second_conv(f).max(2)[0].reshape(B, G, -1)
        e = lambda p: p.expand(B, -1, -1)
        x = torch.cat([e(s.cls_token), e(s.img_token), e(s.text_token), tok], 1)
        pos = torch.cat([e(s.cls_pos), e(s.img_pos), e(s.text_pos), s.pos_embed(centres)], 1)
        for blk in s.blocks.blocks:
            x = blk(x + pos)
        return s.norm(x)

    def forward(s, patches, centres):
        x = s.tokens(patches, centres)
        return s.cls_head_finetune(torch.cat([x[:, 0], x[:, 1], x[:, 2], x[:, 3:].max(1)[0]], -1))


class OfficialZeroShot(OfficialFinetune):
    """PointTransformerZeroShot, type 'full': ratio * text_proj(x[:, 2]) + img_proj(x[:, 1])."""

    def __init__(s, d=48, h=2, depth=2, clip_dim=32, ratio=0.25):
        super().__init__(d, h, depth, classes=0)
        s.ratio = ratio
        s.text_proj, s.img_proj = nn.Linear(d, clip_dim), nn.Linear(d, clip_dim)

    def forward(s, patches, centres):
        x = s.tokens(patches, centres)
        return s.ratio * s.text_proj(x[:, 2]) + s.img_proj(x[:, 1])


def randomise_norms(model: nn.Module) -> None:
    """Non-trivial norm statistics and affine parameters, so a mis-mapped norm shows."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
            nn.init.normal_(m.weight, 1, 0.1); nn.init.normal_(m.bias, 0, 0.1)
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 1.5)


# ---- CLIP's text transformer, as OpenAI's clip/model.py builds it ---------------------------------------
class _ResidualAttentionBlock(nn.Module):
    def __init__(s, width, heads, mask):
        super().__init__()
        s.attn = nn.MultiheadAttention(width, heads)
        s.ln_1, s.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        s.mlp = nn.Sequential()
        s.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        s.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        s.mask = mask

    def forward(s, x):  # x: [L, N, D]
        h = s.ln_1(x)
        x = x + s.attn(h, h, h, need_weights=False, attn_mask=s.mask)[0]
        h = s.mlp.c_fc(s.ln_2(x))
        return x + s.mlp.c_proj(h * torch.sigmoid(1.702 * h))  # QuickGELU


class OfficialClipText(nn.Module):
    """token_embedding, positional_embedding, transformer.resblocks, ln_final, text_projection."""

    def __init__(s, vocab, width=32, layers=2, heads=2, context=77, embed=32):
        super().__init__()
        mask = torch.full((context, context), float("-inf")).triu(1)
        s.token_embedding = nn.Embedding(vocab, width)
        s.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.01)
        s.transformer = nn.Module()
        s.transformer.resblocks = nn.Sequential(*[_ResidualAttentionBlock(width, heads, mask) for _ in range(layers)])
        s.ln_final = nn.LayerNorm(width)
        s.text_projection = nn.Parameter(torch.randn(width, embed) * width ** -0.5)

    def forward(s, ids):  # CrossModal.TextTransformer.forward after tokenisation
        x = s.token_embedding(ids) + s.positional_embedding
        x = s.transformer.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = s.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ s.text_projection


def official_class_features(text_model, tokenize, names: list[str]) -> torch.Tensor:
    """runner_zeroshot.py: per class the sum of 60 prompt features (template[j % 20] + name + ending[j // 20])."""
    openings = ["", "A ", "A model of ", "A model of a ", "A image of ", "A image of a ", "A 3D model of ",
                "A 3D model of a ", "A rendering model of ", "A rendering model of a ", "A point cloud of ",
                "A point cloud of a ", "A point cloud model of ", "A point cloud model of a ",
                "A 3D rendering model of ", "A 3D rendering model of a ", "A rendering image of ",
                "A rendering image of a ", "A 3D rendering image of ", "A 3D rendering image of a "]
    endings = [".", " with white background.", " with black context."]
    out = torch.zeros(len(names), text_model.text_projection.shape[1])
    with torch.no_grad():
        for i, name in enumerate(names):
            for j in range(60):
                out[i] += text_model(tokenize([openings[j % 20] + name + endings[j // 20]]))[0]
    return out


def write_tiny_vocab(path: Path) -> int:
    """A BPE merges file in CLIP's format (header line, then merges) with a few merges; returns the
    vocabulary size it gives (256 bytes x 2 + merges + start/end)."""
    merges = ["c h", "a i", "ch ai", "l a", "m p</w>", "la mp</w>", "t a", "b l", "o f</w>"]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: tiny\n" + "\n".join(merges) + "\n")
    return 512 + len(merges) + 2
