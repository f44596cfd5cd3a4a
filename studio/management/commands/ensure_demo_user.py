from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"  # noqa: S105 - a local demo login, printed on purpose; `make run` only


class Command(BaseCommand):
    help = "Create the demo login (a staff user) when no user exists yet, and print how to log in (DEBUG only)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/", help="where the studio is served (make run passes HOST:PORT)"
        )

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        if not settings.DEBUG:
            # A superuser with a well-known password must never exist on a real server.
            raise CommandError(
                f"Refusing to create the demo login ({DEMO_USERNAME}/{DEMO_PASSWORD}) with DEBUG off: it is only "
                "for `make run` on your own machine. Create a real account with `manage.py createsuperuser`."
            )
        User = get_user_model()
        if not User.objects.exists():
            User.objects.create_superuser(DEMO_USERNAME, email="demo@example.com", password=DEMO_PASSWORD)
            self.stdout.write(self.style.SUCCESS("Created the demo user."))
        if User.objects.filter(username=DEMO_USERNAME).exists():
            self.stdout.write(
                self.style.SUCCESS(
                    f"Log in at {url} as  {DEMO_USERNAME} / {DEMO_PASSWORD}  (staff: the model registry is at /admin/)."
                )
            )
        else:
            self.stdout.write("Users exist already: log in with one of them (manage.py createsuperuser adds one).")
