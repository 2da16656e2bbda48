"""Run tools around ``llamafactory-cli``: launching it with progress, the tiny demo model, the demo, merges, model cards."""
