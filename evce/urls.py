from django.contrib import admin
from django.urls import include, path

# A web process discovers the admin modules here, with its URLs (evce.apps.AdminConfig);
# elsewhere they are loaded already and this does nothing.
admin.autodiscover()
admin.site.site_header = "EV charging site controller"
admin.site.site_title = "EVCE admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("", include("dashboard.urls")),
]
