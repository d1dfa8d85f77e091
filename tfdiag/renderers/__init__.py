"""Rendering: formats a Recording and its Analysis; computes nothing of its own."""
