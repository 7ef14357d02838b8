"""Support in the admin: tickets and runs to read, and the staff actions of this issue (retry a
dead letter, resolve an escalation, pull a kill switch, edit the router's exemplars). Every
write goes through a service; the staff pages of the chat issue build on the same services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from support import apikeys, router, services
from support.models import (
    ApiKey,
    ApiScope,
    DeadLetter,
    Escalation,
    GuardIntervention,
    KillSwitch,
    Release,
    RouterExemplar,
    Run,
    RunStep,
    ShadowOutput,
    Ticket,
)
from support.releases import (
    ReleaseError,
    release_compare,
    release_promote,
    release_rollback,
)


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Release)
class ReleaseAdmin(ReadOnly):
    """Releases are made and started with `manage.py release` (which checks every pin); here
    staff read them, with the candidate's figures against the current release, and roll back
    or promote."""

    list_display = ("name", "state", "share", "started_at", "rolled_back_at", "rolled_back_by")
    list_filter = ("state",)
    readonly_fields = (
        "name",
        "state",
        "share",
        "prompt_versions",
        "model_ids",
        "notes",
        "created_by",
        "started_at",
        "started_by",
        "promoted_at",
        "promoted_by",
        "rolled_back_at",
        "rolled_back_by",
        "rollback_reason",
        "rollback_metrics",
        "figures",
    )
    fields = readonly_fields
    actions = ("rollback", "promote")

    @admin.display(description="Figures against the current release (the window now)")
    def figures(self, obj: Release) -> str:
        if obj.state not in ("shadow", "canary"):
            return "-"
        verdict = release_compare(candidate=obj)
        return "; ".join(verdict.reasons) or verdict.note or str(verdict.as_dict()["candidate"])

    @staticmethod
    def _audit(request: HttpRequest, action: str, release: Release) -> None:
        from django.contrib.auth.models import User

        from support.audit import audit_record

        if isinstance(request.user, User):
            audit_record(
                actor=request.user,
                action=f"release.{action}",
                target=f"release:{release.name}",
                via=f"page:{request.path}",
            )

    @admin.action(description="Roll back (no new ticket goes to it, at once)")
    def rollback(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        who = f"staff:{request.user.get_username()}"
        done = 0
        for release in queryset:
            with transaction.atomic():
                if release_rollback(
                    release=release, actor=who, reason="rolled back by staff in the admin"
                ):
                    self._audit(request, "rollback", release)
                    done += 1
        self.message_user(request, f"{done} release(s) rolled back.")

    @admin.action(description="Promote to current")
    def promote(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Promote one release at a time.", messages.WARNING)
            return
        try:
            release = release_promote(
                release=queryset.get(), actor=f"staff:{request.user.get_username()}"
            )
        except ReleaseError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self._audit(request, "promote", release)
        self.message_user(request, f"{release.name} is the current release.")


@admin.register(ShadowOutput)
class ShadowOutputAdmin(ReadOnly):
    """What a shadow release would have answered (never sent), beside what the customer got."""

    list_display = ("id", "release", "live_run", "kind", "lane", "created_at")
    list_filter = ("release", "lane")


@admin.register(Ticket)
class TicketAdmin(ReadOnly):
    list_display = ("id", "customer", "state", "first_lane", "lane", "channel", "created_at")
    list_filter = ("state", "lane", "channel")
    search_fields = ("customer__email", "subject")


class RunStepInline(admin.TabularInline):
    model = RunStep
    extra = 0
    can_delete = False
    readonly_fields = ("index", "kind", "tokens", "cost_usd", "worker", "started_at", "detail")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnly):
    list_display = (
        "id",
        "ticket",
        "release",
        "shadow_of",
        "status",
        "step",
        "turns",
        "tokens",
        "cost_usd",
        "outcome",
        "wake_at",
    )
    list_filter = ("status", "release", "outcome")
    inlines = (RunStepInline,)


@admin.register(Escalation)
class EscalationAdmin(ReadOnly):
    list_display = ("id", "ticket", "reason", "state", "created_at")
    list_filter = ("state", "reason")
    actions = ("resolve",)

    @admin.action(description="Resolve the selected escalations")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Escalation]) -> None:
        done = sum(services.escalation_resolve(escalation=e) for e in queryset)
        self.message_user(request, f"{done} escalation(s) resolved.")


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnly):
    list_display = ("id", "run", "step", "created_at", "retried_at", "discarded_at")
    actions = ("retry", "discard")

    @admin.action(description="Retry from the last checkpoint")
    def retry(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done = sum(services.dead_letter_retry(dead_letter=d) for d in queryset)
        level = messages.SUCCESS if done else messages.WARNING
        self.message_user(request, f"{done} run(s) resumed from their checkpoint.", level)

    @admin.action(description="Discard")
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        done = sum(services.dead_letter_discard(dead_letter=d) for d in queryset)
        self.message_user(request, f"{done} dead letter(s) discarded.")


@admin.register(KillSwitch)
class KillSwitchAdmin(admin.ModelAdmin):
    list_display = ("scope", "customer", "enabled", "reason", "updated_by", "updated_at")
    fields = ("scope", "customer", "enabled", "reason")

    def save_model(self, request: HttpRequest, obj: KillSwitch, form: Any, change: bool) -> None:
        services.kill_switch_set(
            enabled=obj.enabled,
            actor=f"staff:{request.user.get_username()}",
            customer=obj.customer if obj.scope == "customer" else None,
            reason=obj.reason,
        )


@admin.register(RouterExemplar)
class RouterExemplarAdmin(admin.ModelAdmin):
    list_display = ("text", "lane", "source", "model_id")
    list_filter = ("lane", "source")
    search_fields = ("text",)
    fields = ("text", "lane")

    def save_model(
        self, request: HttpRequest, obj: RouterExemplar, form: Any, change: bool
    ) -> None:
        if change and obj.pk:
            RouterExemplar.objects.filter(pk=obj.pk).delete()
        router.exemplar_add(text=obj.text, lane=obj.lane, source="staff")


@admin.register(GuardIntervention)
class GuardInterventionAdmin(ReadOnly):
    list_display = ("ticket", "lane", "action", "created_at")
    list_filter = ("action", "lane")


# --- REST API keys ------------------------------------------------------------------------------
class ApiKeyAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "owner", "customer", "expires_at")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        owner = cleaned.get("owner")
        if ApiScope.STAFF in cleaned.get("scopes", []) and owner and not owner.is_staff:
            raise forms.ValidationError("a staff key's owner must be staff")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made by `support.apikeys` (the plaintext is shown once, on the page after the
    form), rotated (old key valid for the grace period) and revoked by actions; a saved key
    is not edited."""

    list_display = (
        "name",
        "prefix",
        "scopes",
        "owner",
        "customer",
        "expires_at",
        "revoked_at",
        "replaced_by",
        "last_used_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "owner__username", "customer__email")
    actions = ("rotate", "revoke")
    raw_id_fields = ("customer",)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("name", "scopes", "owner", "customer", "expires_at")
        return (*self.list_display, "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.get_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return
        issued = apikeys.api_key_create(
            name=obj.name,
            scopes=form.cleaned_data["scopes"],
            owner=obj.owner,
            customer=obj.customer,
            expires_at=obj.expires_at,
        )
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.api_key, field.attname))
        obj._state.adding = False
        obj._state.db = issued.api_key._state.db
        request._api_keys_issued = [  # type: ignore[attr-defined]
            {"api_key": issued.api_key, "plaintext": issued.plaintext, "note": "new key"}
        ]

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None):
        issued = getattr(request, "_api_keys_issued", None)
        if issued:
            return self._issued_page(request, issued)
        return super().response_add(request, obj, post_url_continue)

    def _issued_page(self, request: HttpRequest, issued: list[dict[str, Any]]) -> TemplateResponse:
        response = TemplateResponse(
            request,
            "admin/support/apikey/issued.html",
            {**self.admin_site.each_context(request), "issued": issued},
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Rotate (new key; the old one stays valid for the grace period)")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> TemplateResponse | None:
        issued = []
        for api_key in queryset:
            try:
                new = apikeys.api_key_rotate(api_key=api_key)
            except apikeys.ApiKeyError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            api_key.refresh_from_db()
            issued.append(
                {
                    "api_key": new.api_key,
                    "plaintext": new.plaintext,
                    "note": f"replaces {api_key.prefix}, which stays valid until "
                    f"{api_key.expires_at:%Y-%m-%d %H:%M} UTC",
                }
            )
        return self._issued_page(request, issued) if issued else None

    @admin.action(description="Revoke now")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        done = sum(apikeys.api_key_revoke(api_key=k) for k in queryset)
        self.message_user(request, f"{done} key(s) revoked.")
