"""Reinforcement learning for reasoning: rollouts, rule rewards, GRPO/PPO/DPO maths."""
