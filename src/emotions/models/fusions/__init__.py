"""One module per fusion, each registered by name with ``register_fusion``.

``emotions.models.registry.FUSIONS`` imports every module of this package on first use, so a
new fusion is a new file here (plus its name in ``settings.Fusion``).
"""
