"""The losses, one file per algorithm, as plain functions a test can call without a Trainer.

    contrastive.py  CLIP-style InfoNCE across modalities and ranks, retrieval recall@1
    language.py     next-token cross-entropy (SFT, causal LM) and MLM
    masked.py       masked image and audio modelling (MIM, MAM)
    grpo.py         GRPO: group-relative advantages, the clipped loss with its KL term
    ppo.py          PPO: GAE, KL-penalised rewards, clipped policy and value losses
    preference.py   DPO and the Bradley-Terry reward-model loss
    distill.py      knowledge distillation
"""
