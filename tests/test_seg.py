import torch

from recon_serve.model.seg import SegHead, feature_layers, interpolate


def test_feature_layers_match_the_official_choice():
    assert feature_layers(12) == (3, 7, 11)
    assert feature_layers(2) == (0, 1)


def test_interpolation_is_exact_at_centres_and_a_convex_mix_elsewhere():
    torch.manual_seed(0)
    centres = torch.rand(2, 10, 3)
    feats = torch.randn(2, 10, 5)
    at = interpolate(centres, centres, feats)
    assert torch.allclose(at, feats, atol=1e-4)
    pts = torch.rand(2, 50, 3)
    out = interpolate(pts, centres, feats)
    assert (out <= feats.max(1, keepdim=True).values + 1e-5).all() and (out >= feats.min(1, keepdim=True).values - 1e-5).all()


def test_seg_head_shapes_and_category_requirement():
    head = SegHead(dim=8, depth=12, num_parts=6, num_categories=3).eval()
    pts, centres = torch.rand(2, 40, 3), torch.rand(2, 7, 3)
    toks = [torch.randn(2, 7, 8) for _ in head.layers]
    assert head(pts, centres, toks, category=torch.tensor([0, 2])).shape == (2, 40, 6)
    try:
        head(pts, centres, toks)
        raise AssertionError("expected ValueError")
    except ValueError:
        pass


def test_model_with_seg_head_gives_per_point_logits_and_round_trips(tmp_path):
    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=3, num_parts=5)
    model.eval()
    x = torch.rand(2, 300, 3)
    with torch.no_grad():
        out = model(x)
    assert out["part_logits"].shape == (2, 300, 5) and out["logits"].shape == (2, 3)
    save_checkpoint(tmp_path / "s.pt", model, class_names=["a", "b", "c"], extra={"part_names": ["p"] * 5})
    loaded, ckpt = create_model(tmp_path / "s.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x)["part_logits"], out["part_logits"])
    assert ckpt["part_names"] == ["p"] * 5
