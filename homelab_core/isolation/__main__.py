"""``python -m homelab_core.isolation``: a worker process (:mod:`.worker`)."""

from .worker import main

main()
