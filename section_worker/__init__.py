"""The section worker: runs one section job against the AI platform (create conversation,
send prompt, poll for the answer) and streams progress and the result back over gRPC.

``platform_client`` is the one module that knows the platform's wire format; ``jobs`` runs a
job in plain async Python; ``servicer`` adapts both to ``wealthai.worker.v1``. ``files`` is the
worker's client of storage_svc's files (a job carries object keys, never bytes), and
``job_files`` what a job of today's kind does with them: text files into the prompt, the answer
out as a file.
"""
