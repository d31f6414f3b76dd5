import numpy as np
import pytest

from recon_serve.evaluate import accuracy_report, part_miou, shape_iou


def test_shape_iou_hand_computed():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    # part 0: inter 1, union 2 -> 0.5; part 1: inter 2, union 3 -> 2/3
    assert shape_iou(pred, gt, [0, 1]) == pytest.approx((0.5 + 2 / 3) / 2)
    # a part missing from both prediction and truth counts as 1
    assert shape_iou(pred, gt, [0, 1, 2]) == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert shape_iou(gt, gt, [0, 1]) == 1.0


def test_instance_and_class_miou_differ_as_defined():
    cat_parts = {"mug": [0, 1], "lamp": [2, 3]}
    preds = [np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), np.array([2, 2, 2, 2])]
    gts = [np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), np.array([2, 2, 3, 3])]
    r = part_miou(preds, gts, ["mug", "mug", "lamp"], cat_parts)
    lamp = (0.5 + 0.0) / 2  # part 2: inter 2 union 4; part 3: inter 0 union 2
    assert r["instance_miou"] == pytest.approx((1 + 1 + lamp) / 3 * 100)
    assert r["class_miou"] == pytest.approx((1 + lamp) / 2 * 100)
    assert r["per_category"]["lamp"] == pytest.approx(25.0)
    assert r["per_part"] == pytest.approx({0: 100.0, 1: 100.0, 2: 50.0, 3: 0.0})


def test_accuracy_report():
    oa, macc = accuracy_report(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 1]), 2)
    assert oa == pytest.approx(80.0) and macc == pytest.approx((100 + 75) / 2)
