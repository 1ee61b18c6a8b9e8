"""Helpers the tests share: the in-process harness, local deployments, the reference implementation, paths."""
