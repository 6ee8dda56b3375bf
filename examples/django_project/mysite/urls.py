"""One view that echoes what the server passed in the WSGI environ."""

from django.http import HttpRequest, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "django", "method": request.method, "path": request.path,
                         "body_length": len(request.body)})


urlpatterns = [path("", hello), path("echo", hello)]
