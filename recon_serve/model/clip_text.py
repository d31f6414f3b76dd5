"""CLIP's text tower in plain torch, read from a local weights file (never fetched).

The official ReCon checkpoints project their text and image queries into the space of OpenAI's CLIP
ViT-B/32, so zero-shot with them needs CLIP's text encoder. It is written out here (byte-level BPE
tokenizer, causal transformer, end-of-text pooling, projection) rather than imported from open_clip:
open_clip imports torchvision, whose PyPI builds need a CUDA torch. It reads both weight layouts a
user will have: OpenAI's TorchScript archives (`ViT-B-32.pt`) and open_clip state dicts
(`open_clip_pytorch_model.bin` / `.safetensors` saved by `torch.save(model.state_dict())`); only the
text keys are used. The BPE merges file (`bpe_simple_vocab_16e6.txt.gz`, shipped inside the open_clip
and OpenAI clip packages) is looked up next to the weights, then in those packages if installed.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT = 77
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


# ---- tokenizer -------------------------------------------------------------------------------
@functools.cache
def _byte_symbols() -> dict[int, str]:
    """Each byte as one printable character: printable Latin-1 bytes as themselves, the others
    shifted past 255 (so BPE never sees whitespace or control characters)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def find_vocab(near: str | Path | None = None) -> Path:
    """The BPE merges file: next to `near` (the weights), else inside an installed open_clip or clip."""
    candidates = [Path(near).parent / VOCAB_FILE] if near else []
    for package in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(package)  # locates the package without importing it
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(root) / VOCAB_FILE)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"CLIP's BPE vocabulary {VOCAB_FILE} was not found (looked in: "
                            f"{', '.join(str(c) for c in candidates) or 'no place'}); put it next to the weights file")


class ClipTokenizer:
    """CLIP's byte-level BPE: lower-cased, cleaned text -> ids with start/end tokens, padded to 77."""

    def __init__(self, vocab_path: str | Path):
        import regex

        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1] if line.strip()]
        symbols = list(_byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot, self.eot = self.encoder[SOT], self.encoder[EOT]
        self.pattern = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
                                     regex.IGNORECASE)
        self._bpe = functools.lru_cache(maxsize=65536)(self._merge)

    def _merge(self, token: str) -> tuple[str, ...]:
        """Apply the merges in rank order until no ranked pair is left."""
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    @staticmethod
    def clean(text: str) -> str:
        try:
            import ftfy

            text = ftfy.fix_text(text)
        except ImportError:  # ftfy only repairs mis-decoded text; plain text tokenizes the same without it
            pass
        text = html.unescape(html.unescape(text)).strip()
        return " ".join(text.split()).lower()

    def encode(self, text: str) -> list[int]:
        table = _byte_symbols()
        ids = []
        for token in self.pattern.findall(self.clean(text)):
            ids.extend(self.encoder[p] for p in self._bpe("".join(table[b] for b in token.encode("utf-8"))))
        return ids

    def __call__(self, texts: list[str], context: int = CONTEXT) -> torch.Tensor:
        out = torch.zeros(len(texts), context, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text)][: context - 1] + [self.eot]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


# ---- text transformer -----------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, width: int, heads: int, quick_gelu: bool):
        super().__init__()
        self.heads, self.quick_gelu = heads, quick_gelu
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.c_fc, self.c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        B, L, W = x.shape
        q, k, v = self.in_proj(self.ln_1(x)).reshape(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.out_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, L, W))
        h = self.c_fc(self.ln_2(x))
        h = h * torch.sigmoid(1.702 * h) if self.quick_gelu else F.gelu(h)
        return x + self.c_proj(h)


class ClipTextTower(nn.Module):
    """Text features [N, E] as CLIP computes them (not normalised: the official ReCon code distils to,
    and sums prompts of, raw features). Sizes are read off the weights."""

    def __init__(self, state: dict, quick_gelu: bool, tokenizer: ClipTokenizer, name: str):
        super().__init__()
        vocab, width = state["token_embedding.weight"].shape
        layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))
        self.name, self.tokenizer, self.context = name, tokenizer, state["positional_embedding"].shape[0]
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(self.context, width))
        self.blocks = nn.ModuleList(_Block(width, max(1, width // 64), quick_gelu) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, state["text_projection"].shape[1]))
        self.dim = int(self.text_projection.shape[1])
        self.load_state_dict(_to_ours(state))
        self.eval()

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            ids = self.tokenizer(list(texts[i : i + batch_size]), self.context)
            # attention is causal, so nothing after the end-of-text token reaches it: run only up to
            # the batch's last one (prompts are ~10 of the 77 positions; exact, several times faster)
            ids = ids[:, : int(ids.argmax(-1).max()) + 1]
            x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            x = self.ln_final(x)
            out.append(x[torch.arange(len(ids)), ids.argmax(-1)] @ self.text_projection)  # at the end-of-text token
        return torch.cat(out) if out else torch.empty(0, self.dim)


_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.resblocks.", "ln_final.", "text_projection")


def _to_ours(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        k = (k.replace("transformer.resblocks.", "blocks.").replace("attn.in_proj_weight", "in_proj.weight")
             .replace("attn.in_proj_bias", "in_proj.bias").replace("attn.out_proj.", "out_proj.")
             .replace("mlp.c_fc.", "c_fc.").replace("mlp.c_proj.", "c_proj."))
        out[k] = v
    return out


def read_text_weights(path: str | Path) -> tuple[dict, bool]:
    """(text-tower state dict, is an OpenAI TorchScript archive) from a local CLIP weights file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw, openai = load_file(str(path)), False
    else:
        try:
            raw, openai = torch.jit.load(str(path), map_location="cpu").state_dict(), True
        except RuntimeError:  # not TorchScript: a plain state dict
            raw, openai = torch.load(path, map_location="cpu", weights_only=True), False
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    state = {k: v.float() for k, v in raw.items() if k.startswith(_TEXT_KEYS)}
    if "token_embedding.weight" not in state or "text_projection" not in state:
        raise ValueError(f"{path} holds no CLIP text tower (token_embedding / text_projection missing)")
    return state, openai


def load_clip_text(arch: str, path: str | Path) -> ClipTextTower:
    """The text tower of CLIP `arch` (an open_clip name: ViT-B-32; a '-quickgelu' suffix, or an OpenAI
    archive, selects OpenAI's QuickGELU) from `path`."""
    state, openai = read_text_weights(path)
    quick = openai or arch.endswith("-quickgelu")
    return ClipTextTower(state, quick, ClipTokenizer(find_vocab(path)), name=f"clip:{arch.removesuffix('-quickgelu')}")
