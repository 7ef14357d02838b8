from django.apps import AppConfig


class LlmConfig(AppConfig):
    name = "ledgerly.llm"
    label = "llm"
    verbose_name = "Model gateway"

    def ready(self) -> None:
        # Fail at start-up, naming the setting, rather than at the first model call.
        from ledgerly.llm.conf import config

        config()
