"""The smallest Django project gracehttp can serve: one view, no database.

    pip install -e . django && cd examples/django_project && gracehttp mysite.wsgi:application --bind :8080
"""

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
