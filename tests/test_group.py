import torch

from recon_serve.geometry.group import farthest_point_sample, gather_points, group, knn


def _min_pairwise(p):
    d = torch.cdist(p, p) + torch.eye(p.shape[0]) * 1e9
    return d.min().item()


def test_fps_spreads_points_better_than_random():
    torch.manual_seed(0)
    xyz = torch.rand(4, 2048, 3)
    idx = farthest_point_sample(xyz, 64)
    for b in range(4):
        fps_gap = _min_pairwise(xyz[b, idx[b]])
        rnd_gap = max(_min_pairwise(xyz[b, torch.randperm(2048)[:64]]) for _ in range(5))
        assert fps_gap > 2 * rnd_gap
    assert idx.unique(dim=1).shape[1] == 64  # no repeats


def test_fps_is_deterministic_and_starts_where_asked():
    xyz = torch.rand(3, 500, 3)
    a, b = farthest_point_sample(xyz, 32), farthest_point_sample(xyz.clone(), 32)
    assert torch.equal(a, b) and (a[:, 0] == 0).all()
    c = farthest_point_sample(xyz, 32, start=torch.tensor([5, 6, 7]))
    assert c[:, 0].tolist() == [5, 6, 7]


def test_fps_each_pick_is_the_farthest_from_those_chosen():
    xyz = torch.rand(1, 300, 3, dtype=torch.float64)
    idx = farthest_point_sample(xyz, 20)[0]
    for i in range(1, 20):
        d = torch.cdist(xyz[0], xyz[0, idx[:i]]).min(1).values
        assert d[idx[i]] == d.max()


def test_knn_equals_brute_force():
    torch.manual_seed(1)
    xyz, q = torch.rand(2, 400, 3), torch.rand(2, 17, 3)
    idx = knn(9, xyz, q)
    for b in range(2):
        for m in range(17):
            d = ((xyz[b] - q[b, m]) ** 2).sum(-1)
            expect = d.sort().values[:9]
            assert torch.allclose(d[idx[b, m]], expect)
            assert (d[idx[b, m]].diff() >= 0).all()  # nearest first


def test_group_patches_are_relative_to_their_centre():
    xyz = torch.rand(2, 256, 3)
    patches, centres = group(xyz, 16, 8)
    assert patches.shape == (2, 16, 8, 3) and centres.shape == (2, 16, 3)
    # each patch's nearest point is the centre itself (distance 0)
    assert torch.allclose(patches[:, :, 0], torch.zeros(2, 16, 3))
    assert torch.equal(gather_points(xyz, farthest_point_sample(xyz, 16)), centres)
