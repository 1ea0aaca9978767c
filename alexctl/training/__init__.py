"""Training: the story of a run (train), its state on disk and resume, the update rule, the splits it reads."""
