"""The REST API root: one django-ninja Router per app is mounted here."""

from ninja import NinjaAPI

api = NinjaAPI(
    title="Ledgerly API",
    version="1",
    description="Support tickets, conversations and refund requests for Ledgerly customers.",
    urls_namespace="api",
)
api.add_router("/memory/", "memory.api.router")  # help-center management (staff)
