"""The reward as a service: ``deconfoundlm serve`` (:mod:`.server`) and a client for RL trainers
(:mod:`.client`)."""
