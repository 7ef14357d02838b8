from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from ledgerly import health, metrics
from ledgerly.api import api

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("staff/", include("support.views.staff")),
    path("", include("support.views.chat")),
    # The plain home page, until the chat's own "" route takes its place.
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
]
