"""Training: schedules, samplers, checkpoint averaging, the training loop."""
