"""Checkpoints that describe themselves.

A recon-serve checkpoint is one torch file holding the model's config, its weights, class names,
normalisation, teacher name and training recipe, so loading needs no other file. Official ReCon
files are converted on load (`recon_serve.model.official`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = "recon-serve/1"
NORMALISATION = "centre on mean, scale to unit sphere"


def save_checkpoint(path, model, *, class_names=None, teacher=None, recipe=None, metrics=None, extra=None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written checkpoint."""
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
    atomic_save(payload, path)


def atomic_save(obj, path) -> None:
    """torch.save to a temp file, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a checkpoint")
    if ckpt.get("format") != FORMAT:
        from recon_serve.model.official import convert_official

        ckpt = convert_official(ckpt)
    return ckpt


PRETRAIN_ONLY = ("mask_token", "decoder.", "decoder_norm.", "decoder_pos_embed.", "rebuild.")


def slim_checkpoint(src, dst) -> dict:
    """Copy a checkpoint without the pretraining-only reconstruction decoder (not used at inference;
    ~13% of tiny's weights). Returns the written dict."""
    ckpt = read_checkpoint(src)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(PRETRAIN_ONLY)}
    ckpt["slim"] = "reconstruction decoder removed; resume pretraining from the run's state files"
    atomic_save(ckpt, dst)
    return ckpt
