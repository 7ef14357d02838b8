from django.apps import AppConfig


class LlmConfig(AppConfig):
    name = "ledgerly.llm"
    label = "llm"
    verbose_name = "Model gateway"
