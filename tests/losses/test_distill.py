"""Knowledge distillation loss."""

import math

import pytest
import torch

from mmr1.losses.distill import distillation_loss


def test_distillation_matches_teacher_and_labels():
    labels = torch.tensor([[1, -100]])
    teacher = torch.tensor([[[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]]])
    same = distillation_loss(teacher.clone(), teacher, labels, temperature=2.0, alpha=1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(1, 2, 3, requires_grad=True)
    loss = distillation_loss(student, teacher, labels, temperature=1.0, alpha=0.0)
    assert loss.item() == pytest.approx(math.log(3))  # uniform student, hard label only
    with pytest.raises(ValueError, match="share the vocabulary"):
        distillation_loss(torch.zeros(1, 2, 4), teacher, labels)
