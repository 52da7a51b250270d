"""The data plane: sources, probing, annotations, validation, variants, decode-once cache, loader."""
