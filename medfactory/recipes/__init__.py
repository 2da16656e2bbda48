"""Recipe tooling: reading a recipe as ``llamafactory-cli`` does, ``recipes check``, ``recipes lock``, the paper values."""
