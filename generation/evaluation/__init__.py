"""How good a music model is, measured: Fréchet Audio Distance (FAD and FAD∞) of its clips to a reference set, the
CLAP text–audio agreement of each clip with its prompt, and the real-time factor of making them (``beatforge eval``).
"""
