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
