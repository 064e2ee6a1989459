"""Homelab Core's benchmarks: ``make bench`` or ``make bench QUICK=1`` (docs/performance.md)."""
