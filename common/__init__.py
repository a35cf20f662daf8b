"""pirl common modules: the π0 / π0.5 policy, checkpoints, tokeniser, processor, envs and utilities."""
