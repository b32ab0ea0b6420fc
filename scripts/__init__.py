"""Developer entry points: stub generation and the local stack."""
