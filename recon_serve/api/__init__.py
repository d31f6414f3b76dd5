"""HTTP API: `create_app(settings)` (see app.py); routes under routes/, models in schemas.py."""
from recon_serve.api.app import create_app

__all__ = ["create_app"]
