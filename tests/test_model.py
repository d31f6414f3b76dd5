import torch
import torch.nn.functional as F
from torch import nn

from recon_serve.model.checkpoint import read_checkpoint, save_checkpoint
from recon_serve.model.official import official_state_dict_to_ours
from recon_serve.model.factory import create_model, list_configs, load_config
from recon_serve.model.recon import QUERY_NAMES
from official_reference import OfficialFinetune  # pytest puts tests/ on sys.path


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
def test_official_layout_state_dict_loads_and_gives_the_same_logits(tmp_path):
    torch.manual_seed(3)
    official = OfficialFinetune().eval()
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


def test_patch_embedding_folds_batchnorm_in_eval_and_keeps_batch_statistics_in_training():
    from recon_serve.model.recon import MiniPointNet

    torch.manual_seed(4)
    net = MiniPointNet(48)
    for bn in (net.first_conv[1], net.second_conv[1]):
        nn.init.normal_(bn.weight, 1, 0.2); nn.init.normal_(bn.bias, 0, 0.2)
        bn.running_mean.normal_(0, 0.3); bn.running_var.uniform_(0.3, 2.0)
    x = torch.rand(2, 8, 16, 3)

    def unfused(p):  # the paper's order: [pooled, point] concatenated, every layer applied as is
        f = net.first_conv(p.reshape(16, 16, 3))
        f = torch.cat([f.max(1, keepdim=True).values.expand(-1, 16, -1), f], -1)
        return net.second_conv(f).max(1).values.reshape(2, 8, 48)

    net.eval()
    with torch.no_grad():
        assert (net(x) - unfused(x)).abs().max() <= 1e-5
    net.train()
    with torch.no_grad():
        assert (net(x) - unfused(x)).abs().max() <= 1e-5  # batch statistics, not the running ones


def test_every_shape_embedding_has_its_stated_size_and_the_blend_weighs_its_halves_alike():
    from recon_serve.model.recon import SHAPE_EMBEDDINGS

    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=3)
    x = torch.randn(4, 256, 3)
    with torch.no_grad():
        queries, tokens = model.features(x)
        for kind in SHAPE_EMBEDDINGS:
            model.cfg.shape_embedding = kind
            e = model(x)["shape_embedding"]
            assert e.shape == (4, model.shape_embedding_dim), kind
            assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5), kind
        blend = model.shape_embedding(queries, tokens, "cls_max_text")
        geo, text = model.shape_embedding(queries, tokens, "cls_max"), model.text_embedding(queries)
    # cosine of the blend = the mean of its halves' cosines: geometry and label words count alike
    assert torch.allclose(blend @ blend.T, (geo @ geo.T + text @ text.T) / 2, atol=1e-5)
