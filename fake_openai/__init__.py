"""A local OpenAI-compatible server for tests, benchmarks and the demo."""
