"""Process isolation: chosen plugin instances run in worker processes of their own.

- :mod:`.wire`: the messages between the hub and a worker, and their encoding.
- :mod:`.worker`: the worker process itself (``python -m homelab_core.isolation``).
- :mod:`.pool`: the hub's side: :class:`~.pool.Workers`, starting and ending workers.
- :mod:`.runner`: :class:`~.runner.ProcessRunner`, the :class:`~homelab_core.runner.Runner`
  of an isolated instance, which the scheduler uses like any other.

docs/architecture.md ("Process isolation") says what it contains and what it costs.
"""
