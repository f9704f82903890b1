"""The arq worker: its settings, the context it loads at start-up, the shared job runner, one module per job kind."""
