"""Training: engine, pretraining and fine-tuning runs, schedules, distributed set-up."""
