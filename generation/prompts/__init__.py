"""Words for the models: the LLM chat client and the auto mode that writes prompts from a theme."""
