"""The engine: one generic loop that executes a Plan (see docs/architecture.md)."""
