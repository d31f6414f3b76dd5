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


def _concatenated_form(head, pts, centres, toks):
    """The head written the plain way: concatenate every input per point, then the MLPs."""
    feats = torch.cat(toks, -1)
    inputs = [interpolate(pts, centres, feats), pts]
    if head.local is not None:
        inputs.append(head.local(pts))
    x = head.propagate(torch.cat(inputs, -1))
    glob = torch.cat([feats.max(1).values, feats.mean(1)], -1).unsqueeze(1).expand(-1, pts.shape[1], -1)
    return head.mlp(torch.cat([x, glob], -1))


def test_factored_head_equals_the_concatenated_form():
    torch.manual_seed(0)
    for local_k in (0, 8):
        head = SegHead(dim=8, depth=12, num_parts=6, local_k=local_k).eval()
        for m in head.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
        pts, centres = torch.rand(2, 40, 3), torch.rand(2, 7, 3)
        toks = [torch.randn(2, 7, 8) for _ in head.layers]
        with torch.no_grad():
            assert torch.allclose(head(pts, centres, toks), _concatenated_form(head, pts, centres, toks), atol=1e-5)


def test_local_statistics_see_the_normal_and_the_border():
    """On a flat grid every covariance entry involving z is zero; at a corner the mean offset points inwards."""
    from recon_serve.model.seg import LocalGeometry

    g = torch.linspace(0, 1, 12)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    pts = torch.cat([grid, torch.zeros(len(grid), 1)], -1).unsqueeze(0)  # z = 0 plane
    stats = LocalGeometry.statistics(pts, 9)[0]  # [N, 9]: mean(3), cov xx xy xz yy yz zz
    assert stats[:, [2, 5, 7, 8]].abs().max() < 1e-6
    assert stats[:, [3, 6]].min() > 0  # in-plane variance
    corner = 0  # (0, 0): neighbours lie towards +x and +y
    assert stats[corner, 0] > 0 and stats[corner, 1] > 0
    middle = 6 * 12 + 6
    assert stats[corner, :2].norm() > 3 * stats[middle, :2].norm()


def test_grown_head_starts_at_the_trained_heads_answers():
    torch.manual_seed(0)
    old = SegHead(dim=8, depth=12, num_parts=6).eval()
    new = SegHead(dim=8, depth=12, num_parts=6, local_k=8).eval()
    new.load_grown(old.state_dict())
    pts, centres = torch.rand(2, 40, 3), torch.rand(2, 7, 3)
    toks = [torch.randn(2, 7, 8) for _ in old.layers]
    with torch.no_grad():
        assert torch.allclose(new(pts, centres, toks), old(pts, centres, toks), atol=1e-5)
    assert new.local is not None and (new.propagate[0].weight[:, -64:] == 0).all()
    try:
        SegHead(dim=8, depth=12, num_parts=5).load_grown(old.state_dict())
        raise AssertionError("expected ValueError for another part count")
    except ValueError:
        pass
