import torch
import torch.nn.functional as F
from torch import nn

from recon_serve.model.checkpoint import official_state_dict_to_ours, read_checkpoint, save_checkpoint
from recon_serve.model.factory import create_model, list_configs, load_config
from recon_serve.model.recon import QUERY_NAMES


def _micro(**kw):
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=4, **kw)
    return model


def test_configs_mirror_the_official_sizes():
    assert {"micro", "tiny", "small", "base"} <= set(list_configs())
    base, tiny = load_config("base"), load_config("tiny")
    assert (base.trans_dim, base.depth, base.num_heads, base.num_group, base.group_size, base.num_points) == (384, 12, 6, 64, 32, 1024)
    assert (tiny.trans_dim, tiny.depth, tiny.num_heads) == (192, 12, 3)


def test_contrastive_loss_sends_no_gradient_into_the_encoder():
    model = _micro()
    x = torch.rand(4, 256, 3)
    targets = F.normalize(torch.randn(3, model.cfg.text_dim), dim=-1)
    patches, centres = model.group(x)
    queries, _ = model.encoder(patches, centres, stop_grad=True)
    sum(model.contrastive_loss(queries, targets, torch.tensor([0, 1, 2, 0])).values()).backward()
    enc = model.encoder
    local = [enc.patch_embed, enc.pos_embed] + [m for b in enc.blocks for m in (b.norm1, b.attn, b.norm2, b.mlp)]
    for mod in local:
        for p in mod.parameters():
            assert p.grad is None or p.grad.abs().max() == 0
    # ...while the query branch does learn from it
    assert enc.blocks[0].cross_attn.q.weight.grad.abs().max() > 0
    assert enc.query_tokens.grad.abs().max() > 0


def test_without_stop_gradient_the_encoder_would_receive_gradient():
    model = _micro()
    patches, centres = model.group(torch.rand(2, 256, 3))
    queries, _ = model.encoder(patches, centres, stop_grad=False)
    model.text_proj(queries[:, QUERY_NAMES.index("text")]).sum().backward()
    assert model.encoder.patch_embed.first_conv[0].weight.grad.abs().max() > 0


def test_reconstruction_loss_trains_the_encoder():
    model = _micro()
    model.pretrain_losses(torch.rand(2, 256, 3))["mdm"].backward()
    assert model.encoder.patch_embed.first_conv[0].weight.grad.abs().max() > 0


def test_tiny_model_overfits_a_tiny_set():
    torch.manual_seed(0)
    model = _micro(drop_path_rate=0.0)
    # four clearly different shapes: sphere, cube surface, line, plane
    n = 256
    s = F.normalize(torch.randn(n, 3), dim=-1)
    c = torch.rand(n, 3) - 0.5
    c[torch.arange(n), torch.randint(0, 3, (n,))] = 0.5
    line = torch.zeros(n, 3); line[:, 0] = torch.linspace(-1, 1, n)
    plane = torch.rand(n, 3) * 2 - 1; plane[:, 2] = 0
    x = torch.stack([s, c, line, plane]).repeat(2, 1, 1)
    y = torch.tensor([0, 1, 2, 3]).repeat(2)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    model.train()
    for _ in range(60):
        q, t = model.features(x, stop_grad=False)
        loss = F.cross_entropy(model.head_logits(q, t), y)
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.3
    with torch.no_grad():  # refresh BatchNorm statistics, which lag weights that moved fast
        model.apply(lambda m: m.reset_running_stats() if isinstance(m, nn.BatchNorm1d) else None)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = None  # cumulative average
        for _ in range(3):
            model(x)
        model.eval()
        assert (model(x)["logits"].argmax(1) == y).all()


def test_checkpoint_round_trip_keeps_outputs(tmp_path):
    model = _micro().eval()
    x = torch.rand(3, 256, 3)
    with torch.no_grad():
        before = model(x)
    save_checkpoint(tmp_path / "m.pt", model, class_names=["a", "b", "c", "d"], teacher="all-MiniLM-L6-v2", recipe={"epochs": 1})
    loaded, ckpt = create_model(tmp_path / "m.pt")
    with torch.no_grad():
        after = loaded(x)
    assert ckpt["class_names"] == ["a", "b", "c", "d"] and ckpt["teacher"] == "all-MiniLM-L6-v2"
    assert ckpt["config"]["name"] == "micro" and ckpt["recipe"] == {"epochs": 1} and "unit sphere" in ckpt["normalisation"]
    for k in before:
        assert torch.equal(before[k], after[k])


# ---- official ReCon layout ---------------------------------------------------------------------
# A from-scratch stand-in for the official fine-tune model's parameter layout (module names and
# shapes as in qizekun/ReCon's PointTransformer): Conv1d patch embedding, separate cls/img/text
# tokens, blocks.blocks.N.{attn,attn_contrast,mlp,mlp_contrast,norm*}, cls_head_finetune.
class _OffMlp(nn.Module):
    def __init__(s, d, h):
        super().__init__(); s.fc1, s.fc2 = nn.Linear(d, h), nn.Linear(h, d)

    def forward(s, x):
        return s.fc2(F.gelu(s.fc1(x)))


class _OffAttn(nn.Module):
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


class _OffBlock(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.norm1, s.norm2, s.norm1_contrast, s.norm2_contrast = (nn.LayerNorm(d) for _ in range(4))
        s.attn, s.attn_contrast = _OffAttn(d, h, False), _OffAttn(d, h, True)
        s.mlp, s.mlp_contrast = _OffMlp(d, 4 * d), _OffMlp(d, 4 * d)

    def forward(s, x):
        c, v = s.norm1_contrast(x[:, :3]), s.norm1(x[:, 3:])
        c = c + s.attn_contrast(c, v)
        v = v + s.attn(v)
        c, v = s.norm2_contrast(c), s.norm2(v)
        return torch.cat([c + s.mlp_contrast(c), v + s.mlp(v)], 1)


class _OffBlocks(nn.Module):
    def __init__(s, d, h, depth):
        super().__init__(); s.blocks = nn.ModuleList(_OffBlock(d, h) for _ in range(depth))


class _OfficialLayout(nn.Module):
    def __init__(s, d=48, h=2, depth=2, classes=4):
        super().__init__()
        s.encoder = nn.Module()
        s.encoder.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 256, 1))
        s.encoder.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(), nn.Conv1d(512, d, 1))
        for n in ("cls_token", "cls_pos", "img_token", "img_pos", "text_token", "text_pos"):
            setattr(s, n, nn.Parameter(torch.randn(1, 1, d) * 0.02))
        s.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, d))
        s.blocks = _OffBlocks(d, h, depth)
        s.norm = nn.LayerNorm(d)
        s.cls_head_finetune = nn.Sequential(nn.Linear(4 * d, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
                                            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, classes))

    def forward(s, patches, centres):
        B, G, S, _ = patches.shape
        f = s.encoder.first_conv(patches.reshape(B * G, S, 3).transpose(2, 1))
        f = torch.cat([f.max(2, keepdim=True)[0].expand(-1, -1, S), f], 1)
        tok = s.encoder.second_conv(f).max(2)[0].reshape(B, G, -1)
        e = lambda p: p.expand(B, -1, -1)
        x = torch.cat([e(s.cls_token), e(s.img_token), e(s.text_token), tok], 1)
        pos = torch.cat([e(s.cls_pos), e(s.img_pos), e(s.text_pos), s.pos_embed(centres)], 1)
        for blk in s.blocks.blocks:
            x = blk(x + pos)
        x = s.norm(x)
        return s.cls_head_finetune(torch.cat([x[:, 0], x[:, 1], x[:, 2], x[:, 3:].max(1)[0]], -1))


def test_official_layout_state_dict_loads_and_gives_the_same_logits(tmp_path):
    torch.manual_seed(3)
    official = _OfficialLayout().eval()
    for m in official.modules():  # non-trivial norm statistics and affine parameters
        if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
            nn.init.normal_(m.weight, 1, 0.1); nn.init.normal_(m.bias, 0, 0.1)
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 1.5)
    raw = {"base_model": {"module." + k: v for k, v in official.state_dict().items()}}
    torch.save(raw, tmp_path / "official.pth")

    mapped = official_state_dict_to_ours(raw["base_model"])
    assert "encoder.query_tokens" in mapped and mapped["encoder.query_tokens"].shape == (1, 3, 48)

    ckpt = read_checkpoint(tmp_path / "official.pth")
    assert ckpt["config"]["depth"] == 2 and ckpt["config"]["num_classes"] == 4
    model, _ = create_model(tmp_path / "official.pth", num_heads=2, num_group=16, group_size=16, num_points=256)
    x = torch.rand(2, 256, 3)
    with torch.no_grad():
        ours = model(x)["logits"]
        patches, centres = model.group(x)
        theirs = official(patches, centres)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_slim_checkpoint_drops_the_decoder_and_keeps_outputs(tmp_path):
    from recon_serve.model.checkpoint import slim_checkpoint

    model = _micro().eval()
    save_checkpoint(tmp_path / "full.pt", model, class_names=list("abcd"))
    slim = slim_checkpoint(tmp_path / "full.pt", tmp_path / "slim.pt")
    assert not any(k.startswith("decoder.") for k in slim["state_dict"])
    loaded, _ = create_model(tmp_path / "slim.pt")
    x = torch.rand(2, 256, 3)
    with torch.no_grad():
        assert torch.equal(loaded(x)["logits"], model(x)["logits"])
    assert (tmp_path / "slim.pt").stat().st_size < (tmp_path / "full.pt").stat().st_size
