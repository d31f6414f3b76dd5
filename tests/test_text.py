import torch

from recon_serve.model.text import TEMPLATES, class_text, zero_shot_weights


def test_teacher_is_offline_and_meaningful(teacher):
    f = teacher(["a chair", "a wooden chair with four legs", "an airplane flying in the sky"])
    assert f.shape == (3, 384)
    assert torch.allclose(f.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert f[0] @ f[1] > f[0] @ f[2] + 0.2


def test_zero_shot_weights_are_unit_prompt_ensembles(teacher):
    w = zero_shot_weights(teacher, ["chair", "night_stand"])
    assert w.shape == (2, 384) and torch.allclose(w.norm(dim=-1), torch.ones(2), atol=1e-5)
    single = teacher([TEMPLATES[0].format("night stand")])[0]
    assert w[1] @ single > 0.8 and class_text("night_stand") == "night stand"
