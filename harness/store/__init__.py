"""Memstates on disk: the binary format (safetensors steps and a manifest), JSON lines for ports in other
languages, and the legacy one-step dumps."""
