from django.urls import path

from dashboard import commissioning, history, maintenance, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("chargers/<int:pk>/", views.charger, name="charger"),
    path("chargers/<int:pk>/accept/", views.charger_accept, name="charger_accept"),
    path("chargers/<int:pk>/command/", views.charger_command, name="charger_command"),
    path("chargers/<int:pk>/configuration/read/", views.charger_read_configuration, name="charger_read_configuration"),
    path("chargers/<int:pk>/configuration/change/", views.charger_change_configuration,
         name="charger_change_configuration"),
    path("sessions/", history.sessions, name="sessions"),
    path("sessions.csv", history.sessions_csv, name="sessions_csv"),
    path("sessions/<int:pk>/", history.session, name="session"),
    path("sessions/<int:pk>/vip/", views.session_vip, name="session_vip"),
    path("sessions/<int:pk>/curve.json", history.session_curve, name="session_curve"),
    path("site-power.json", history.site_power, name="site_power"),
    path("energy.json", history.energy, name="energy"),
    path("log/", maintenance.log, name="log"),
    path("log.csv", maintenance.log_download, {"fmt": "csv"}, name="log_csv"),
    path("log.json", maintenance.log_download, {"fmt": "json"}, name="log_json"),
    path("health/", maintenance.health, name="health"),
    path("backup/", maintenance.backup_page, name="backup"),
    path("commissioning/", commissioning.commissioning, name="commissioning"),
    path("backup.json", maintenance.backup_download, name="backup_download"),
]
