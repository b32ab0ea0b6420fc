"""The section worker: runs one section job against the AI platform (create conversation,
send prompt, poll for the answer) and streams progress and the result back over gRPC.

``platform_client`` is the one module that knows the platform's wire format; ``jobs`` runs a
job in plain async Python; ``servicer`` adapts both to ``wealthai.worker.v1``.
"""
