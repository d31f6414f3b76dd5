"""ReCon ("Contrast with Reconstruct", ICML 2023) in plain PyTorch, CPU or CUDA alike.

One module holds the whole model: grouping, the mini-PointNet patch embedding, the transformer of
ReCon blocks (local tokens + global queries joined by stop-gradient cross-attention), the masked
reconstruction decoder, the teacher projections and the classification head. Training objectives
live here too so that training, export and serving run the same code.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recon_serve.geometry.group import group
from recon_serve.model.layers import Block, ReConBlock
from recon_serve.model.seg import SegHead

QUERY_NAMES = ("cls", "img", "text")
# How the shape embedding (shape-to-shape search) is pooled from the encoder; chosen on validation
# data by the calibration step (`recon-serve eval-retrieval --shape-embeddings ...` reports each).
# Each part is unit length before joining; cls_max_text also joins the text embedding, weighted as
# the geometric part, so a search by example weighs geometry and what the shape is called alike.
SHAPE_EMBEDDINGS = ("max", "mean_max", "cls_max", "cls_max_text")


@dataclass
class ReConConfig:
    """Architecture and pretraining hyper-parameters (mirrors qizekun/ReCon cfgs/pretrain/*.yaml)."""

    name: str = "tiny"
    trans_dim: int = 192
    encoder_dims: int = 192
    depth: int = 12
    num_heads: int = 3
    decoder_depth: int = 4
    decoder_num_heads: int = 3
    group_size: int = 32
    num_group: int = 64
    num_points: int = 1024
    mask_ratio: float = 0.6
    drop_path_rate: float = 0.1
    text_dim: int = 384  # output size of the text teacher (all-MiniLM-L6-v2: 384); 0: no text projection
    img_dim: int = 0  # 0: no image teacher; set to the image teacher's size to add the img projection
    # the text-aligned embedding: text_weight * text_proj(text query) + img_weight * img_proj(img query);
    # the official zero-shot model ("full") uses 0.25 and 1 (its `ratio`), ours the text query alone
    text_weight: float = 1.0
    img_weight: float = 0.0
    fps_skip_origin: bool = False  # pointnet2_ops' FPS rule (official checkpoints), see geometry.group
    up_axis: str = "z"  # the axis that is up in the frame the model was trained in (official code: y)
    cls_hidden: int = 256
    num_classes: int = 0
    num_parts: int = 0  # >0 adds the part segmentation head (parts of all categories in one label space)
    seg_encoder: bool = False  # the seg head has its own fine-tuned encoder (as the paper's ShapeNetPart model)
    seg_local_k: int = 0  # >0: the seg head also sees a descriptor of each point's k nearest points
    shape_embedding: str = "max"  # one of SHAPE_EMBEDDINGS
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def chamfer_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Chamfer distance (squared L2, both directions, averaged) between point sets [B,N,3] and [B,M,3]."""
    d = torch.cdist(a, b).pow(2)
    return d.min(2).values.mean() + d.min(1).values.mean()


class _PointBN(nn.BatchNorm1d):
    """BatchNorm over the channels of a [..., C] tensor (points in rows)."""

    def forward(self, x):
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


PATCH_CHUNK = 128  # patches per mini-PointNet pass in eager inference (two shapes; see MiniPointNet.forward)


class MiniPointNet(nn.Module):
    """Per-patch PointNet: shared MLP, max-pool, concat the pooled feature back, MLP, max-pool.

    The shared MLPs are Linear layers on channels-last points rather than the paper's 1x1 Conv1d:
    the same maths (official Conv1d weights map by dropping their last axis), but on CPU a matmul
    runs several times faster than a 1x1 convolution, backward included.
    """

    def __init__(self, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(nn.Linear(3, 128), _PointBN(128), nn.ReLU(inplace=True), nn.Linear(128, 256))
        self.second_conv = nn.Sequential(nn.Linear(512, 512), _PointBN(512), nn.ReLU(inplace=True), nn.Linear(512, out_dim))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """The second MLP's input is [pooled feature, point feature], so its first Linear splits into
        a per-patch half (applied once per patch) and a per-point half: the same numbers as the
        concatenated form at a third less compute. In eval mode each BatchNorm is folded into the
        Linear before it (one pass over the largest activations less, and no fp32 round trip
        between bf16 matmuls under autocast); training keeps the batch statistics. Eager inference
        runs PATCH_CHUNK patches at a time, so the [patches, points, 512] activations stay small
        (fresh large buffers cost page faults on every call); each patch's numbers are its own."""
        B, G, S, _ = patches.shape
        flat = patches.reshape(B * G, S, 3)
        if self.training or torch.compiler.is_compiling() or len(flat) <= PATCH_CHUNK:
            return self._embed(flat).reshape(B, G, self.out_dim)
        return torch.cat([self._embed(c) for c in flat.split(PATCH_CHUNK)]).reshape(B, G, self.out_dim)

    def _embed(self, patches: torch.Tensor) -> torch.Tensor:
        """[P, S, 3] patches -> [P, out_dim]."""
        lin1, bn1, _, out1 = self.first_conv
        lin2, bn2, _, out2 = self.second_conv
        w1, b1 = _fold(lin1, bn1)
        x = out1(_bn_relu(bn1, F.linear(patches, w1, b1)))
        w2, b2 = _fold(lin2, bn2)
        h = x.shape[-1]
        pooled = F.linear(x.max(1, keepdim=True).values, w2[:, :h], b2)
        x = _bn_relu(bn2, F.linear(x, w2[:, h:]) + pooled)
        return out2(x).max(1).values


def _fold(lin: nn.Linear, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """The Linear's (weight, bias), with the BatchNorm after it folded in when in eval mode (then an
    affine map per channel); in training BN needs the batch statistics and runs in `_bn_relu`."""
    if bn.training:
        return lin.weight, lin.bias
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return lin.weight * scale[:, None], (lin.bias - bn.running_mean) * scale + bn.bias


def _bn_relu(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    return F.relu(bn(x) if bn.training else x)


class ReConEncoder(nn.Module):
    """Patch embedding + positional embedding + ReCon blocks; returns (global queries, local tokens)."""

    def __init__(self, cfg: ReConConfig):
        super().__init__()
        C = cfg.trans_dim
        if cfg.encoder_dims != C:
            raise ValueError("encoder_dims must equal trans_dim (as in every official config)")
        self.patch_embed = MiniPointNet(C)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, C))
        nq = len(QUERY_NAMES)
        self.query_tokens = nn.Parameter(torch.zeros(1, nq, C))
        self.query_pos = nn.Parameter(torch.zeros(1, nq, C))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(ReConBlock(C, cfg.num_heads, nq, dpr[i]) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(C)
        nn.init.trunc_normal_(self.query_tokens, std=0.02)
        nn.init.trunc_normal_(self.query_pos, std=0.02)

    def forward(self, patches, centres, visible: torch.Tensor | None = None, stop_grad: bool = True, return_layers=()):
        """patches [B,G,S,3], centres [B,G,3]; `visible` [B,G] bool keeps only unmasked patches.

        With `return_layers` (block indices) also returns the normalised local tokens after those
        blocks, for dense heads (segmentation) that want several depths.
        """
        B = patches.shape[0]
        if visible is not None:  # masked patches are never embedded (the decoder only sees their centres)
            patches = patches[visible].reshape(B, -1, *patches.shape[2:])
            centres = centres[visible].reshape(B, -1, 3)
        tokens = self.patch_embed(patches)
        pos = self.pos_embed(centres)
        x = torch.cat([self.query_tokens.expand(B, -1, -1), tokens], dim=1)
        pos = torch.cat([self.query_pos.expand(B, -1, -1), pos], dim=1)
        nq = len(QUERY_NAMES)
        layers = []
        for i, blk in enumerate(self.blocks):
            x = blk(x + pos, stop_grad=stop_grad)
            if i in return_layers:
                layers.append(self.norm(x[:, nq:]))
        x = self.norm(x)
        if return_layers:
            return x[:, :nq], x[:, nq:], layers
        return x[:, :nq], x[:, nq:]


class ReCon(nn.Module):
    """The full model. `forward(points)` gives logits and the text-aligned global embedding."""

    def __init__(self, cfg: ReConConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.trans_dim
        self.encoder = ReConEncoder(cfg)
        # masked reconstruction decoder (pretraining only)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, C))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, C))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.decoder_depth).tolist()
        self.decoder = nn.ModuleList(Block(C, cfg.decoder_num_heads, dpr[i]) for i in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(C)
        self.rebuild = nn.Linear(C, 3 * cfg.group_size)
        # teacher projections for the global queries
        self.text_proj = nn.Linear(C, cfg.text_dim) if cfg.text_dim else None
        self.img_proj = nn.Linear(C, cfg.img_dim) if cfg.img_dim else None
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), as CLIP
        # classification head on [cls, img, text, max-pooled tokens]
        self.cls_head = None
        if cfg.num_classes:
            self.set_num_classes(cfg.num_classes)
        self.seg_head = None
        self.seg_encoder = ReConEncoder(cfg) if cfg.seg_encoder else None
        if cfg.num_parts:
            self.set_num_parts(cfg.num_parts)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.apply(_init_weights)

    def set_num_classes(self, n: int) -> None:
        """(Re)build the classification head for n classes."""
        C, H = self.cfg.trans_dim, self.cfg.cls_hidden
        self.cfg.num_classes = n
        self.cls_head = nn.Sequential(
            nn.Linear(4 * C, H), nn.BatchNorm1d(H), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(H, H), nn.BatchNorm1d(H), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(H, n),
        )
        self.cls_head.apply(_init_weights)

    def set_num_parts(self, n: int, own_encoder: bool | None = None) -> None:
        """(Re)build the part segmentation head for n parts. own_encoder=True gives it a copy of the
        encoder to fine-tune, so segmentation can improve without moving classification answers."""
        self.cfg.num_parts = n
        if own_encoder is not None:
            self.cfg.seg_encoder = own_encoder
            self.seg_encoder = copy.deepcopy(self.encoder) if own_encoder else None
        self.seg_head = SegHead(self.cfg.trans_dim, self.cfg.depth, n, local_k=self.cfg.seg_local_k)
        self.seg_head.apply(_init_weights)

    # ---- inference -------------------------------------------------------------------------
    def group(self, points: torch.Tensor):
        return group(points, self.cfg.num_group, self.cfg.group_size, skip_origin=self.cfg.fps_skip_origin)

    def features(self, points: torch.Tensor, stop_grad: bool = True):
        patches, centres = self.group(points)
        return self.encoder(patches, centres, stop_grad=stop_grad)

    def head_logits(self, queries, tokens) -> torch.Tensor:
        feat = torch.cat([queries.flatten(1), tokens.max(1).values], dim=-1)
        return self.cls_head(feat)

    @property
    def embedding_dim(self) -> int:
        """Size of the text-aligned embedding; 0 when the model has none (an official fine-tune
        checkpoint carries no projection: it serves labels only)."""
        parts = self._embedding_parts()
        return parts[0][1].out_features if parts else 0

    def _embedding_parts(self) -> list:
        parts = [(w, proj, QUERY_NAMES.index(q)) for w, proj, q in
                 ((self.cfg.text_weight, self.text_proj, "text"), (self.cfg.img_weight, self.img_proj, "img"))
                 if w and proj is not None]
        if len({p.out_features for _, p, _ in parts}) > 1:
            raise ValueError("text_proj and img_proj differ in size; they cannot be mixed into one embedding")
        return parts

    def text_embedding(self, queries) -> torch.Tensor | None:
        """The global embedding in the text teacher's space, unit length (None without a projection)."""
        parts = self._embedding_parts()
        if not parts:
            return None
        return F.normalize(sum(w * proj(queries[:, i]) for w, proj, i in parts), dim=-1)

    @property
    def shape_embedding_dim(self) -> int:
        kind = self.cfg.shape_embedding
        return self.cfg.trans_dim * (1 if kind == "max" else 2) + (self.cfg.text_dim if kind == "cls_max_text" else 0)

    def shape_embedding(self, queries, tokens, kind: str | None = None) -> torch.Tensor:
        """Unit-length shape descriptor for shape-to-shape search, pooled from the local tokens
        (which reconstruction trains on geometry); cls_max_text joins cls_max and the text embedding
        (trained on label words), each unit length."""
        kind = kind or self.cfg.shape_embedding
        if kind == "cls_max_text":
            text = self.text_embedding(queries)
            if text is None:
                raise ValueError("the cls_max_text shape embedding needs a text projection; this model has none")
            return F.normalize(torch.cat([self.shape_embedding(queries, tokens, "cls_max"), text], -1), dim=-1)
        parts = {"max": [tokens.max(1).values], "mean_max": [tokens.max(1).values, tokens.mean(1)],
                 "cls_max": [queries[:, QUERY_NAMES.index("cls")], tokens.max(1).values]}.get(kind)
        if parts is None:
            raise ValueError(f"unknown shape embedding {kind!r}; choose one of {SHAPE_EMBEDDINGS}")
        return F.normalize(torch.cat([F.normalize(p, dim=-1) for p in parts], -1), dim=-1)

    def forward(self, points: torch.Tensor) -> dict:
        """{'embedding' [B,D] (text-aligned, if a projection), 'shape_embedding' [B,E], 'logits' [B,K] if a class head,
        'part_logits' [B,N,P] if a seg head}."""
        patches, centres = self.group(points)
        if self.seg_head is None or self.seg_encoder is not None:
            queries, tokens = self.encoder(patches, centres)
        else:
            queries, tokens, layers = self.encoder(patches, centres, return_layers=self.seg_head.layers)
        out = {"shape_embedding": self.shape_embedding(queries, tokens)}
        embedding = self.text_embedding(queries)
        if embedding is not None:
            out["embedding"] = embedding
        if self.cls_head is not None:
            out["logits"] = self.head_logits(queries, tokens)
        if self.seg_encoder is not None:
            _, _, layers = self.seg_encoder(patches, centres, return_layers=self.seg_head.layers)
        if self.seg_head is not None:
            out["part_logits"] = self.seg_head(points, centres, layers)
        return out

    def part_logits(self, points: torch.Tensor, train_encoder: bool = True) -> torch.Tensor:
        """Per-point part logits [B,N,P]; with train_encoder=False the encoder runs without autograd
        (a frozen encoder keeps the classification head's accuracy intact)."""
        encoder = self.seg_encoder or self.encoder
        with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
            patches, centres = self.group(points)
            _, _, layers = encoder(patches, centres, stop_grad=False, return_layers=self.seg_head.layers)
        return self.seg_head(points, centres, layers)

    # ---- training objectives ----------------------------------------------------------------
    def random_mask(self, B: int, G: int, device) -> torch.Tensor:
        """[B,G] bool, True = masked; exactly round(ratio*G) masked per cloud."""
        n_mask = int(self.cfg.mask_ratio * G)
        order = torch.rand(B, G, device=device).argsort(1)
        mask = torch.zeros(B, G, dtype=torch.bool, device=device)
        mask.scatter_(1, order[:, :n_mask], True)
        return mask

    def reconstruction_loss(self, patches, centres, tokens_vis, mask) -> torch.Tensor:
        B, G, S, _ = patches.shape
        C = tokens_vis.shape[-1]
        pos_vis = self.decoder_pos_embed(centres[~mask]).reshape(B, -1, C)
        pos_mask = self.decoder_pos_embed(centres[mask]).reshape(B, -1, C)
        M = pos_mask.shape[1]
        x = torch.cat([tokens_vis, self.mask_token.expand(B, M, -1)], dim=1)
        pos = torch.cat([pos_vis, pos_mask], dim=1)
        for blk in self.decoder:
            x = blk(x + pos)
        x = self.decoder_norm(x[:, -M:])
        pred = self.rebuild(x).reshape(B * M, S, 3)
        return chamfer_l2(pred, patches[mask].reshape(B * M, S, 3))

    def contrastive_loss(self, queries, text_targets: torch.Tensor, target_ids: torch.Tensor) -> dict:
        """Distil (smooth-L1, as the paper) and contrast (InfoNCE over the batch's distinct texts).

        text_targets [T, D] are teacher features of the distinct texts in the batch; target_ids [B]
        says which one belongs to each sample.
        """
        proj = self.text_proj(queries[:, QUERY_NAMES.index("text")])
        teacher = text_targets[target_ids]
        distil = F.smooth_l1_loss(proj, teacher)
        logits = self.logit_scale.exp().clamp(max=100) * F.normalize(proj, dim=-1) @ F.normalize(text_targets, dim=-1).T
        return {"csc_text": distil, "contrast": F.cross_entropy(logits, target_ids)}

    def pretrain_losses(self, points, text_targets=None, target_ids=None) -> dict:
        patches, centres = self.group(points)
        B, G = centres.shape[:2]
        mask = self.random_mask(B, G, points.device)
        queries, tokens = self.encoder(patches, centres, visible=~mask, stop_grad=True)
        losses = {"mdm": self.reconstruction_loss(patches, centres, tokens, mask)}
        if text_targets is not None:
            losses.update(self.contrastive_loss(queries, text_targets, target_ids))
        return losses


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
