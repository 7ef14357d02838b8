"""The staff pages (mounted at /staff/)."""

from __future__ import annotations

from django.urls import URLPattern

app_name = "staff"
urlpatterns: list[URLPattern] = []
