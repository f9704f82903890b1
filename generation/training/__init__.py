"""Fine-tuning MusicGen on your own clips: a LoRA adapter on the decoder (default) or the whole decoder.

The library entry point is :func:`generation.training.loop.train`; ``beatforge train`` (``cli/train.py``) and the
worker's admin job both call it with a :class:`~generation.training.config.TrainConfig`, a progress callback and a
cancel check.
"""
