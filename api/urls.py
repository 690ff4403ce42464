from django.urls import path

from api.views import ZoneMeasurementView

urlpatterns = [
    path("zones/<int:zone_id>/measurement", ZoneMeasurementView.as_view(), name="api-zone-measurement"),
]
