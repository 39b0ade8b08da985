"""Knowledge distillation: a student learns a frozen teacher's soft targets plus the hard labels (SFT data)."""

from __future__ import annotations

import torch

from mmr1.model import MultimodalModel, media_inputs
from mmr1.objectives.base import ObjectiveModule
from mmr1.objectives.frozen import FrozenModels, check_vocabulary, frozen
from mmr1.losses.distill import distillation_loss


class DistillModule(FrozenModels, ObjectiveModule):
    """SFT data (SFTDataModule): α·τ²·KL(teacher_τ || student_τ) + (1-α)·CE on the response tokens.

    The teacher (any size, same vocabulary) is loaded when the run starts, so building the
    module from a config does not read it."""

    def __init__(self, teacher: str, temperature: float = 2.0, alpha: float = 0.5, **base):
        """
        Args:
            teacher: the teacher's checkpoint folder (config.json + model.safetensors [+ tokenizer]).
            temperature: τ, softening both distributions.
            alpha: weight of the soft (teacher) term; 1 - alpha weighs the hard labels.
            **base: the student's model, optimiser and freezing arguments of ObjectiveModule.
        """
        super().__init__(**base)
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
        self.save_hyperparameters()
        self._frozen = {}

    @property
    def teacher(self) -> MultimodalModel:
        if "teacher" not in self._frozen:
            raise RuntimeError("teacher: not loaded yet; it is loaded in setup() when the run starts")
        return self._frozen["teacher"]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if "teacher" not in self._frozen:
            folder = self.hparams.teacher
            try:
                teacher = MultimodalModel.from_pretrained(folder)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"teacher: cannot load {folder}: {e}") from e
            check_vocabulary(folder, teacher.config, self.config, self.tokenizer, "teacher")
            self._frozen["teacher"] = frozen(teacher).to(self.device)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        h = self.hparams
        student, _ = self.model(batch["input_ids"], batch["attention_mask"], **media_inputs(batch))
        with torch.no_grad():
            teacher, _ = self.teacher(batch["input_ids"], batch["attention_mask"], **media_inputs(batch))
        logits, teacher_logits, labels = student.logits[:, :-1], teacher.logits[:, :-1], batch["labels"][:, 1:]
        loss = distillation_loss(logits, teacher_logits, labels, h.temperature, h.alpha)  # logits at t predict t+1
        with torch.no_grad():
            kl = distillation_loss(logits, teacher_logits, labels, h.temperature, alpha=1.0) / h.temperature ** 2
        return {"loss": loss, "kl": kl}
