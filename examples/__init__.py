"""Runnable examples; they ship in the package so `llmtap demo` can run the sample app from any install."""
