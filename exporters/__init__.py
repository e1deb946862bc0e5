"""Exporters turn a model spec into a deployable artifact with a manifest."""
