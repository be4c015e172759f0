"""Distillation on MMDetection: the teacher/student wrapper (``PGDDistiller``), the
per-detector adapters (the recorders), every KD method behind one interface
(:mod:`pgd.distill.methods`) and the ``distill`` config section's model dict."""
