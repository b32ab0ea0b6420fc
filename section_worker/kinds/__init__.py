"""Job kinds the worker runs; one module per kind."""
