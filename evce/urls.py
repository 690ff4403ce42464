from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness probe for process supervisors; says nothing about the site."""
    return HttpResponse("ok", content_type="text/plain")


admin.site.site_header = "EV charging site controller"
admin.site.site_title = "EVCE admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("api/", include("api.urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
