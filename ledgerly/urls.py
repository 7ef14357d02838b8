from django.contrib import admin
from django.urls import path
from django.views.generic import TemplateView

from ledgerly import health
from ledgerly.api import api

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
]
