"""Distillation on MMDetection: the PGD distiller, per-detector adapters, masks, the KD
baselines and the ``distill`` config section."""
