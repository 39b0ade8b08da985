"""Reinforcement learning for reasoning: rollouts, rule rewards, rejection sampling (the losses: `mmr1.losses`)."""
