from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "EV charging site controller"
admin.site.site_title = "EVCE admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("", include("dashboard.urls")),
]
