"""REST gateway: the platform's only HTTP face. Translates the user's REST contract to the
orchestrator's gRPC API and back; owns no task state."""
