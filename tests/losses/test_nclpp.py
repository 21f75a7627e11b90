"""NCL++ loss and hard category mining against a by-hand implementation with explicit loops."""
import math

import numpy as np
import pytest
import torch

from timm_longtail.errors import UserInputError
from timm_longtail.losses import NCLPPLoss, hard_category_count, hard_category_mask

COUNTS = [40, 20, 8, 4, 2]


def _log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    log_sum = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - log_sum for v in values]


def _kl_over(lp: dict[int, float], lq: dict[int, float], classes) -> float:
    return sum(math.exp(lp[c]) * (lp[c] - lq[c]) for c in classes)


def _nclpp_by_hand(z: np.ndarray, y: list[int], copies: int, num_hard: int, renormalize: bool,
                   lam_intra: float = 0.6, lam_inter: float = 0.6) -> dict[str, float]:
    experts, rows, classes = z.shape
    images = rows // copies
    log_n = [math.log(n) for n in COUNTS]
    b = [[[z[e, r, c] + log_n[c] for c in range(classes)] for r in range(rows)] for e in range(experts)]
    hard = []
    for r in range(rows):
        others = sorted((c for c in range(classes) if c != y[r]), key=lambda c: -z[0, r, c])
        hard.append({y[r], *others[: num_hard - 1]})

    def full(e, r):  # log balanced probabilities over all classes, as {class: log p}
        return dict(enumerate(_log_softmax(b[e][r])))

    def on_hard(e, r, hard_set):  # paper: renormalised over the hard set
        cs = sorted(hard_set)
        return dict(zip(cs, _log_softmax([b[e][r][c] for c in cs])))

    out = {}
    out["bil_all"] = sum(-full(e, r)[y[r]] for e in range(experts) for r in range(rows)) / rows
    if renormalize:
        out["bil_hard"] = sum(-on_hard(e, r, hard[r])[y[r]] for e in range(experts) for r in range(rows)) / rows
    else:
        zeroed = lambda e, r: [b[e][r][c] if c in hard[r] else 0.0 for c in range(classes)]  # noqa: E731
        out["bil_hard"] = sum(-_log_softmax(zeroed(e, r))[y[r]] for e in range(experts) for r in range(rows)) / rows

    def pair_norm(k):
        return 2.0 / (k * (k - 1)) if k > 1 else 0.0

    inter_all = inter_hard = 0.0
    for k in range(experts):
        for q in range(experts):
            if k == q:
                continue
            for r in range(rows):
                inter_all += _kl_over(full(k, r), full(q, r), range(classes)) / rows
                if renormalize:
                    inter_hard += _kl_over(on_hard(k, r, hard[r]), on_hard(q, r, hard[r]), hard[r]) / rows
                else:
                    inter_hard += _kl_over(full(k, r), full(q, r), hard[r]) / rows
    out["inter_all"] = lam_inter * pair_norm(experts) * inter_all
    out["inter_hard"] = lam_inter * pair_norm(experts) * inter_hard

    intra_all = intra_hard = 0.0
    for e in range(experts):
        for t in range(copies):
            for tau in range(copies):
                if t == tau:
                    continue
                for i in range(images):
                    r, s, h = t * images + i, tau * images + i, hard[i]  # copy 0's hard set
                    intra_all += pair_norm(copies) * _kl_over(full(e, r), full(e, s), range(classes)) / images
                    if renormalize:
                        intra_hard += pair_norm(copies) * _kl_over(on_hard(e, r, h), on_hard(e, s, h), h) / images
                    else:
                        intra_hard += pair_norm(copies) * _kl_over(full(e, r), full(e, s), h) / images
    out["intra_all"] = lam_intra * intra_all
    out["intra_hard"] = lam_intra * intra_hard
    return out


def test_hard_category_mask_keeps_target_and_top_non_targets():
    logits = torch.tensor([[5.0, 1.0, 3.0, 2.0, 4.0],   # target 1 is low: keep 1, then 0 (5), 4 (4)
                           [9.0, 1.0, 3.0, 2.0, 4.0],   # target 0 is the top: keep 0, 4, 2
                           [0.0, 0.0, 7.0, 0.5, 0.2]])  # target 3 (0.5): keep 3, 2 (7), 4 (0.2)
    target = torch.tensor([1, 0, 3])
    mask = hard_category_mask(logits, target, num_hard=3)
    assert mask.tolist() == [[True, True, False, False, True],
                             [True, False, True, False, True],
                             [False, False, True, True, True]]
    assert hard_category_mask(logits, target, 1).nonzero()[:, 1].tolist() == [1, 0, 3]
    with pytest.raises(UserInputError, match="num_hard"):
        hard_category_mask(logits, target, 6)


def test_hard_category_count_rounds_ratio_times_classes():
    assert hard_category_count(0.3, 100) == 30
    assert hard_category_count(0.3, 1000) == 300
    assert hard_category_count(0.3, 5) == 2  # 1.5 rounds up
    assert hard_category_count(0.01, 10) == 1  # never fewer than the target
    with pytest.raises(UserInputError, match="hard_ratio"):
        hard_category_count(0.0, 10)


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("experts,copies", [(2, 2), (3, 3)])
def test_nclpp_loss_matches_hand_computation(renormalize, experts, copies):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(experts, copies * 2, 5)) * 2  # T copies of B = 2 images
    y = [1, 4] * copies  # copy-major: row t·B + b is copy t of image b
    loss = NCLPPLoss(COUNTS, num_experts=experts, num_copies=copies, num_hard=3, renormalize_hard=renormalize)
    got = loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y))
    expected = _nclpp_by_hand(z, y, copies=copies, num_hard=3, renormalize=renormalize)
    assert loss.components == {k: pytest.approx(v, rel=1e-4, abs=1e-6) for k, v in expected.items()}
    assert got.item() == pytest.approx(sum(expected.values()), rel=1e-5)
    assert all(v > 0 for k, v in expected.items() if not k.endswith("hard") or renormalize)


def test_renormalised_and_reference_variants_differ():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 5) * 2
    y = torch.tensor([0, 3, 0, 3])
    paper = NCLPPLoss(COUNTS, 2, 2, num_hard=3, renormalize_hard=True)
    reference = NCLPPLoss(COUNTS, 2, 2, num_hard=3, renormalize_hard=False)
    paper(z, y)
    reference(z, y)
    for key in ("bil_hard", "inter_hard", "intra_hard"):
        assert paper.components[key] != pytest.approx(reference.components[key], rel=1e-3), key
    for key in ("bil_all", "inter_all", "intra_all"):
        assert paper.components[key] == pytest.approx(reference.components[key]), key


@pytest.mark.parametrize("renormalize", [True, False])
def test_collaborative_terms_vanish_for_identical_experts_and_copies(renormalize):
    torch.manual_seed(1)
    one_image_set = torch.randn(1, 1, 3, 5)  # B = 3 images
    z = one_image_set.expand(2, 2, 3, 5).reshape(2, 6, 5)  # every expert, every copy the same
    y = torch.tensor([0, 2, 4]).repeat(2)
    loss = NCLPPLoss(COUNTS, num_experts=2, num_copies=2, num_hard=2, renormalize_hard=renormalize)
    total = loss(z, y)
    for key in ("inter_all", "inter_hard", "intra_all", "intra_hard"):
        assert loss.components[key] == pytest.approx(0.0, abs=1e-6), key
    assert total.item() == pytest.approx(loss.components["bil_all"] + loss.components["bil_hard"], rel=1e-6)


def test_single_copy_and_single_expert_drop_their_terms():
    torch.manual_seed(2)
    y = torch.tensor([0, 1, 2])
    one_copy = NCLPPLoss(COUNTS, num_experts=2, num_copies=1, num_hard=2)
    one_copy(torch.randn(2, 3, 5), y)
    assert one_copy.components["intra_all"] == 0 and one_copy.components["intra_hard"] == 0
    assert one_copy.components["inter_all"] > 0
    one_expert = NCLPPLoss(COUNTS, num_experts=1, num_copies=3, num_hard=2)
    one_expert(torch.randn(1, 3, 5), torch.tensor([4, 4, 4]))
    assert one_expert.components["inter_all"] == 0 and one_expert.components["inter_hard"] == 0
    assert one_expert.components["intra_all"] > 0


@pytest.mark.parametrize("renormalize", [True, False])
def test_gradients_reach_every_expert_and_stay_finite(renormalize):
    torch.manual_seed(4)
    z = (torch.randn(3, 4, 5) * 3).requires_grad_()
    loss = NCLPPLoss(COUNTS, num_experts=3, num_copies=2, hard_ratio=0.4, renormalize_hard=renormalize)
    value = loss(z, torch.tensor([2, 3, 2, 3]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    assert all(z.grad[e].abs().sum() > 0 for e in range(3))


def test_shape_mismatches_are_user_errors():
    loss = NCLPPLoss(COUNTS, num_experts=2, num_copies=2)
    with pytest.raises(UserInputError, match="2 experts"):
        loss(torch.zeros(3, 4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserInputError, match="multiple of num_copies"):
        loss(torch.zeros(2, 5, 5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(UserInputError, match="num_hard"):
        NCLPPLoss(COUNTS, num_experts=2, num_copies=2, num_hard=9)
