"""Cover art: the diffusion model and its safety check, the prompt, the procedural fallback, and the title."""
