"""--predict RUN_DIR: a trained run's canonical weights on both sides, no retraining; its submissions and agreement."""
