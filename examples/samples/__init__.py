"""Ports of Google's public Flask samples onto cloudclients (see README.md here)."""
