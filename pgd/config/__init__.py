"""The platform's configuration: every name list (:mod:`pgd.config.names`), every default
(:mod:`pgd.config.defaults`), the typed models of a run (:mod:`pgd.config.run`) and of a
sweep's space file (:mod:`pgd.config.space`), and strict YAML loading with errors that name
the file, the key path, the bad value and the valid choices (:mod:`pgd.config.loading`).

This package imports neither torch nor mmdet: ``names`` and ``defaults`` are plain Python (the
math core imports them), the models need pydantic and PyYAML only.
"""
