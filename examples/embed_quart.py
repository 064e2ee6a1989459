"""Mount Homelab Core into your own Quart app, under ``/homelab``.

Run it from a checkout with the ``web`` extra installed::

    python examples/embed_quart.py

then open http://127.0.0.1:5000/ (this app's own page),
http://127.0.0.1:5000/homelab/api/plugins (Homelab Core's REST API) and
http://127.0.0.1:5000/homelab/docs (its API documentation).

The hub (scheduler, store, plugins) starts when the app starts serving and stops, after
writing everything still queued, when it shuts down. The embedded default settings apply:
SQLite in the working directory (``homelab.db``) and the bundled ``system`` plugin.
"""

from __future__ import annotations

from quart import Quart

from homelab_core import Settings
from homelab_core.web import HomelabWeb


def create_app(settings: Settings | None = None) -> Quart:
    """Your app, with Homelab Core mounted under ``/homelab``."""
    app = Quart(__name__)

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"app": "my homelab dashboard", "homelab_api": "/homelab/api/plugins"}

    HomelabWeb(app, settings=settings or Settings.default(), url_prefix="/homelab")
    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
