"""The MusicGen engine: loading and caching models, the model registry, sampling, batching, and the tiny test model."""
