"""Capture: hooks into TensorFlow and Keras that only append to a Collector.

Nothing here analyses; TensorFlow is imported lazily, when the user's code
imports it (see ``patching.Patcher.when_imported``).
"""
