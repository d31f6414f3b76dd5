"""Checkpoints that describe themselves, and the official ReCon key mapping.

A recon-serve checkpoint is one torch file holding the model's config, its weights, class names,
normalisation, teacher name and training recipe, so loading needs no other file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

FORMAT = "recon-serve/1"
NORMALISATION = "centre on mean, scale to unit sphere"


def save_checkpoint(path, model, *, class_names=None, teacher=None, recipe=None, metrics=None, extra=None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "class_names": list(class_names or []),
        "normalisation": NORMALISATION,
        "teacher": teacher,
        "recipe": recipe or {},
        "metrics": metrics or {},
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a checkpoint")
    if ckpt.get("format") != FORMAT:
        ckpt = convert_official(ckpt)
    return ckpt


# ---- official qizekun/ReCon checkpoints -----------------------------------------------------
_QUERY_KEYS = {"token": ("cls_token", "img_token", "text_token"), "pos": ("cls_pos", "img_pos", "text_pos")}
_RENAMES = [
    (r"^encoder\.", "encoder.patch_embed."),
    (r"^pos_embed\.", "encoder.pos_embed."),
    (r"^blocks\.blocks\.", "encoder.blocks."),
    (r"^norm\.", "encoder.norm."),
    (r"\.norm1_contrast\.", ".norm1_query."),
    (r"\.norm2_contrast\.", ".norm2_query."),
    (r"\.attn_contrast\.", ".cross_attn."),
    (r"\.mlp_contrast\.", ".mlp_query."),
    (r"^MAE_decoder\.blocks\.", "decoder."),
    (r"^MAE_decoder\.norm\.", "decoder_norm."),
    (r"^increase_dim\.0\.", "rebuild."),
    (r"^cls_head_finetune\.", "cls_head."),
]


def official_state_dict_to_ours(sd: dict) -> dict:
    """Map an official ReCon state dict (pretrain or fine-tune layout) onto our key names and shapes."""
    sd = {re.sub(r"^(module\.)?(base_model\.)?(module\.)?", "", k): v for k, v in sd.items()}
    sd = {k[len("MAE_encoder."):] if k.startswith("MAE_encoder.") else k: v for k, v in sd.items()}
    out = {}
    for kind, names in _QUERY_KEYS.items():
        if all(n in sd for n in names):
            out[f"encoder.query_{'tokens' if kind == 'token' else 'pos'}"] = torch.cat([sd.pop(n) for n in names], dim=1)
    for k, v in sd.items():
        for pat, rep in _RENAMES:
            k = re.sub(pat, rep, k)
        if v.dim() == 3 and v.shape[-1] == 1 and (".first_conv." in k or ".second_conv." in k or k.startswith("rebuild.")):
            v = v[..., 0]  # 1x1 Conv1d -> Linear
        out[k] = v
    return out


def infer_official_config(sd: dict) -> dict:
    """Architecture sizes read off an (already mapped) official state dict."""
    C = sd["encoder.query_tokens"].shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.blocks."))
    cfg = {"trans_dim": C, "encoder_dims": C, "depth": depth,
           "num_heads": {192: 3, 256: 4, 384: 6}.get(C, max(1, C // 64))}
    if "rebuild.weight" in sd:
        cfg["group_size"] = sd["rebuild.weight"].shape[0] // 3
        cfg["decoder_depth"] = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("decoder."))
        cfg["decoder_num_heads"] = cfg["num_heads"]
    if "text_proj.weight" in sd:
        cfg["text_dim"] = sd["text_proj.weight"].shape[0]
    if "img_proj.weight" in sd:
        cfg["img_dim"] = sd["img_proj.weight"].shape[0]
    if "cls_head.8.weight" in sd:
        cfg["num_classes"] = sd["cls_head.8.weight"].shape[0]
        cfg["cls_hidden"] = sd["cls_head.0.weight"].shape[0]
    return cfg


def convert_official(raw: dict) -> dict:
    """An official checkpoint file ({'base_model': sd, ...} or a bare sd) as a recon-serve checkpoint dict."""
    sd = raw.get("base_model", raw.get("model", raw.get("state_dict", raw)))
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("no state dict found in checkpoint")
    mapped = official_state_dict_to_ours(sd)
    if "encoder.query_tokens" not in mapped:
        raise ValueError("not a ReCon checkpoint: no cls/img/text tokens found")
    return {"format": FORMAT, "config": {"name": "official", **infer_official_config(mapped)}, "state_dict": mapped,
            "class_names": [], "normalisation": NORMALISATION, "teacher": "clip-ViT-B/32 (official)", "recipe": {"source": "official ReCon"}}


PRETRAIN_ONLY = ("mask_token", "decoder.", "decoder_norm.", "decoder_pos_embed.", "rebuild.")


def slim_checkpoint(src, dst) -> dict:
    """Copy a checkpoint without the pretraining-only reconstruction decoder (not used at inference;
    ~13% of tiny's weights). Returns the written dict."""
    ckpt = read_checkpoint(src)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(PRETRAIN_ONLY)}
    ckpt["slim"] = "reconstruction decoder removed; resume pretraining from the run's state files"
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, dst)
    return ckpt
