"""The generation layer: datasets made by a served model (translation, Q&A) through one LLM client.

``client`` sends the requests (loopback endpoints only unless allowed, concurrency, retries, the
request cache that makes a rerun resume); the steps build requests and gate the answers. It imports
``base`` and ``corpus`` only; ``medfactory.cli`` puts the commands on top (see docs/generation.md).
"""
