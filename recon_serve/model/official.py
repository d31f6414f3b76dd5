"""Official qizekun/ReCon checkpoints as self-describing recon-serve checkpoints.

What the official weights need beyond their tensors, and where each comes from here:
  * key names and shapes: mapped onto ours (`official_state_dict_to_ours`);
  * sizes the weights cannot tell (num_group, num_points; official ScanObjectNN models use 128 / 2,048,
    ModelNet-8k 512 / 8,192): the official config file (`import_official(..., config=...)`) or flags;
  * the frame: the official pipeline is y-up (its augmentation rotates about y), so `up_axis="y"`;
  * FPS: pointnet2_ops' rule (points with |p|^2 <= 1e-3 never become centres), `fps_skip_origin`;
  * the text space: CLIP ViT-B/32 (`teacher="clip:ViT-B-32"`), with the official prompts, and the
    zero-shot model's embedding `ratio * text_proj(text query) + img_proj(img query)` (ratio 0.25);
  * class names for a 40- or 15-way head: ModelNet40's shape-names file or the official ScanObjectNN
    list, in the official code's order, unless the user gives names.
A fine-tune checkpoint has no projection: it serves labels only (no embedding, nothing random).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from recon_serve.model.checkpoint import FORMAT, NORMALISATION, atomic_save

log = logging.getLogger("recon_serve.official")

# modelnet40_shape_names.txt, in its order (the official code reads it line by line)
MODELNET40_NAMES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent",
    "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)
# tools/runner_zeroshot.py's ScanObjectNN list, in its order (its last name is spelt 'toile' there)
SCANOBJECTNN_NAMES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
                      "pillow", "sink", "sofa", "toilet")
CLASS_NAMES = {40: ("ModelNet40 (modelnet40_shape_names.txt order, as the official code)", MODELNET40_NAMES),
               15: ("ScanObjectNN (the official code's list and order)", SCANOBJECTNN_NAMES)}

TEACHER = "clip:ViT-B-32"
PROMPTS = "recon-official"
ZERO_SHOT_RATIO = 0.25  # cfgs/zeroshot/*.yaml `ratio`
FLAGS = "--config cfgs/.../X.yaml, or --num-group/--num-points/--group-size"

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
_warned: set[str] = set()


def official_state_dict_to_ours(sd: dict) -> dict:
    """Map an official ReCon state dict (pretrain or fine-tune layout) onto our key names and shapes."""
    sd = {re.sub(r"^(module\.)?(base_model\.)?(module\.)?", "", k): v for k, v in sd.items()}
    sd = {k[len("MAE_encoder."):] if k.startswith("MAE_encoder.") else k: v for k, v in sd.items()}
    # the frozen teachers and the unused single-modal contrast head of a pretrain checkpoint
    sd = {k: v for k, v in sd.items() if not k.startswith(("text_encoder.", "img_encoder.", "cls_proj.", "contrastive_head."))}
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
    """Architecture sizes read off an (already mapped) official state dict; no projection -> size 0."""
    C = sd["encoder.query_tokens"].shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.blocks."))
    cfg = {"trans_dim": C, "encoder_dims": C, "depth": depth,
           "num_heads": {192: 3, 256: 4, 384: 6}.get(C, max(1, C // 64)),
           "text_dim": sd["text_proj.weight"].shape[0] if "text_proj.weight" in sd else 0,
           "img_dim": sd["img_proj.weight"].shape[0] if "img_proj.weight" in sd else 0}
    if "rebuild.weight" in sd:
        cfg["group_size"] = sd["rebuild.weight"].shape[0] // 3
        cfg["decoder_depth"] = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("decoder."))
        cfg["decoder_num_heads"] = cfg["num_heads"]
    if "cls_head.8.weight" in sd:
        cfg["num_classes"] = sd["cls_head.8.weight"].shape[0]
        cfg["cls_hidden"] = sd["cls_head.0.weight"].shape[0]
    return cfg


def read_official_config(path: str | Path) -> dict:
    """Our config fields (and `class_names`, `dataset`) from an official cfgs/*.yaml."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text()) or {}
    model = dict(raw.get("model") or {})
    model.update(model.pop("transformer_config", None) or {})
    out = {k: model[k] for k in ("num_group", "group_size", "trans_dim", "depth", "num_heads", "decoder_depth",
                                 "decoder_num_heads", "mask_ratio") if k in model}
    if "npoints" in raw:
        out["num_points"] = int(raw["npoints"])
    if "ratio" in model:
        out["ratio"] = float(model["ratio"])
    if model.get("type") in ("text", "image", "full"):
        out["type"] = model["type"]
    base = str((((raw.get("dataset") or {}).get("train") or {}).get("_base_")) or "")
    dataset = next((d for d in ("ModelNet40", "ModelNet10", "ScanObjectNN", "ShapeNet") if d in base), None)
    if dataset:
        out["dataset"] = dataset
    return out


def _mix(sd: dict, kind: str | None, ratio: float) -> tuple[float, float]:
    """(text_weight, img_weight) of the embedding, as PointTransformerZeroShot's `type`."""
    has_text, has_img = "text_proj.weight" in sd, "img_proj.weight" in sd
    same = has_text and has_img and sd["text_proj.weight"].shape[0] == sd["img_proj.weight"].shape[0]
    kind = kind or ("full" if same else "text" if has_text else "image" if has_img else None)
    if kind == "full" and same:
        return ratio, 1.0
    if kind == "image" and has_img:
        return 0.0, 1.0
    return (1.0, 0.0) if has_text else (0.0, 0.0)


def convert_official(raw: dict, config: str | Path | None = None, class_names=None, warn: bool = True, **flags) -> dict:
    """An official checkpoint file's dict ({'base_model': sd, ...} or a bare sd) as a recon-serve
    checkpoint dict. Sizes come from `config` (an official yaml) and `flags` (num_group, num_points,
    group_size, up_axis); without either it warns once, naming the flags."""
    sd = raw.get("base_model", raw.get("model", raw.get("state_dict", raw)))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("no state dict found in checkpoint")
    mapped = official_state_dict_to_ours(sd)
    if "encoder.query_tokens" not in mapped:
        raise ValueError("not a ReCon checkpoint: no cls/img/text tokens found")
    given = read_official_config(config) if config else {}
    given.update({k: v for k, v in flags.items() if v is not None})
    cfg = {"name": "official", "num_group": 64, "num_points": 1024, **infer_official_config(mapped),
           "fps_skip_origin": True, "up_axis": "y"}
    cfg.update({k: given[k] for k in ("num_group", "group_size", "num_points", "num_heads", "up_axis") if k in given})
    cfg["text_weight"], cfg["img_weight"] = _mix(mapped, given.get("type"), given.get("ratio", ZERO_SHOT_RATIO))
    if warn and not ({"num_group", "num_points"} <= given.keys()):
        key = str(sorted(mapped)[:3]) + str(cfg["trans_dim"])
        if key not in _warned:
            _warned.add(key)
            log.warning("official checkpoint loaded without its config: num_group=%d, num_points=%d assumed "
                        "(official ScanObjectNN models use 128/2048, ModelNet-8k 512/8192); record them with "
                        "`recon-serve import-official CKPT %s`", cfg["num_group"], cfg["num_points"], FLAGS)
    names, source = list(class_names or []), "given" if class_names else None
    k = cfg.get("num_classes", 0)
    if k and not names and k in CLASS_NAMES:
        if given.get("dataset", "ScanObjectNN" if k == 15 else "ModelNet40") in ("ModelNet40", "ScanObjectNN"):
            source, names = CLASS_NAMES[k][0], list(CLASS_NAMES[k][1])
    if names and k and len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}-way head")
    embeds = bool(cfg["text_weight"] or cfg["img_weight"])
    return {"format": FORMAT, "config": cfg, "state_dict": mapped, "class_names": names,
            "class_names_source": source, "normalisation": NORMALISATION,
            "teacher": TEACHER if embeds else None, "prompts": PROMPTS,
            "recipe": {"source": "official ReCon", "config_file": str(config) if config else None}}


def import_official(src: str | Path, dst: str | Path, config: str | Path | None = None, class_names=None,
                    **flags) -> dict:
    """Write `src` (an official .pth) as a self-describing recon-serve checkpoint at `dst` (checked
    to load into the model first)."""
    from recon_serve.model.factory import model_from_checkpoint

    raw = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(raw, dict):
        raise ValueError(f"{src} is not a checkpoint")
    ckpt = convert_official(raw, config=config, class_names=class_names, warn=False, **flags)
    model_from_checkpoint(ckpt)
    atomic_save(ckpt, dst)
    return ckpt
