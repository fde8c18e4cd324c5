"""Values -> embedding rows -> tensors: the lookup token of a value, the stable hash, the
vocabulary's life cycle, the encoder, and what eviction would cost (revisits)."""
