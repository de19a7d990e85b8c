"""`llmtap demo`."""

from llmtap.cli import not_built_yet

demo = not_built_yet("demo", "Run the whole pipeline locally with a sample app, no API key needed.")
