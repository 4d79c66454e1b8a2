"""Personal access tokens in the admin: superusers only (a token acts as its user, so making
one for somebody else is a superuser's act). A token made here is shown once, on the page that
answers the save; tokens are revoked with the "Revoke" action, never edited."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from api.models import AccessToken
from api.tokens import DAYS_DEFAULT, DAYS_MAX, revoke_token, seal


class AccessTokenForm(forms.ModelForm):
    days = forms.IntegerField(
        min_value=1, max_value=DAYS_MAX, initial=DAYS_DEFAULT, help_text="Expires after."
    )

    class Meta:
        model = AccessToken
        fields = ["user", "name", "scope"]


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "user",
        "prefix",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["scope"]
    search_fields = ["name", "user__username", "prefix"]
    actions = ["revoke"]
    readonly_fields = ["prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]

    def _superuser(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a token is made, then revoked; never edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = AccessTokenForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None):
        if obj is None:
            return ["user", "name", "scope", "days"]
        return ["user", "name", "scope", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: AccessToken, form: Any, change: bool) -> None:
        if not change:
            request._stageline_token = seal(obj, days=form.cleaned_data["days"])  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: AccessToken, post_url_continue: Any = None
    ) -> HttpResponse:
        """The page that shows the new token, once."""
        context = {
            **self.admin_site.each_context(request),
            "title": f"Token '{obj.name}' made",
            "token": obj,
            "plaintext": getattr(request, "_stageline_token", ""),
            "opts": self.opts,
        }
        response = TemplateResponse(request, "admin/api/token_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[AccessToken]) -> None:
        for token in queryset.filter(revoked_at__isnull=True):
            revoke_token(user=request.user, pk=token.pk)
        messages.success(request, "Revoked: those tokens no longer sign anybody in.")
