"""The built-in testbed: a planted-attribute world and a small model trained on it."""
