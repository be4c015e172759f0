"""Sweeps: space files -> Ray Tune (grid / Optuna, ASHA) over Ray Train trials -> MLflow."""
