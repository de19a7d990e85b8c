"""Zero-code OpenAI instrumentation: one OpenTelemetry GenAI span per call."""
