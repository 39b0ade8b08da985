"""Knowledge distillation: a teacher's soft targets at temperature tau plus the hard labels.

Shapes: N sequences, L tokens, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 2.0, alpha: float = 0.5, ignore_index: int = -100) -> torch.Tensor:
    """α·τ²·KL(teacher_τ || student_τ) + (1-α)·CE(student, labels), over positions whose label is
    not ignored. Logits [N, L, V] (already aligned with labels [N, L]); teacher and student must
    share the vocabulary."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher_logits: expected the student's shape {list(student_logits.shape)}, got "
                         f"{list(teacher_logits.shape)} (teacher and student must share the vocabulary)")
    keep = labels != ignore_index  # [N, L]
    s, t = student_logits[keep].float(), teacher_logits[keep].float()  # [n, V]
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="batchmean") * temperature ** 2
    hard = F.cross_entropy(s, labels[keep])
    return alpha * soft + (1 - alpha) * hard
