"""The studio on ASGI (Procfile `web`): an open live stream (studio/live.py) waits without a thread."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")

application = get_asgi_application()
