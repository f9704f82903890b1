"""What makes or analyses sound and pictures: models, signal processing, and the worker that runs them."""
