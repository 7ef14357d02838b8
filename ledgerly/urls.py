from django.contrib import admin
from django.urls import include, path

from ledgerly import health, metrics
from ledgerly.api import urlpatterns as api_urlpatterns

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    *api_urlpatterns(),  # /api/v1/, /api/docs, the uniform 404 under /api/
    path("staff/", include("support.views.staff")),
    path("", include("support.views.chat")),
]
