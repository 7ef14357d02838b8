from django.apps import AppConfig


class SupportConfig(AppConfig):
    name = "support"
    verbose_name = "Support"

    def ready(self) -> None:
        from ledgerly.metrics import register_scrape_collector
        from support.metrics import support_state

        register_scrape_collector("support", support_state)
