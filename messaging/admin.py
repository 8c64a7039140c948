from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q

from chatsite.errors import ServiceError

from . import services
from .models import Block, Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Read-only: nobody edits what users said."""

    list_display = ["id", "sender", "to", "sent_at", "short_body", "pending"]
    list_filter = ["kind", "sent_at"]
    search_fields = ["body", "sender__username", "recipient__username"]
    date_hierarchy = "sent_at"
    list_select_related = ["sender", "recipient"]
    fields = ["kind", "sender", "recipient", "sent_at", "body", "pending"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            pending_count=Count("deliveries", filter=Q(deliveries__acked_at__isnull=True))
        )

    @admin.display(description="to", ordering="recipient__username")
    def to(self, obj):
        return obj.recipient or "everyone"

    @admin.display(description="body")
    def short_body(self, obj):
        return obj.body if len(obj.body) <= 60 else obj.body[:59] + "…"

    @admin.display(description="pending for", ordering="pending_count")
    def pending(self, obj):
        return obj.pending_count

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BlockForm(forms.ModelForm):
    class Meta:
        model = Block
        fields = ["blocker", "blocked"]

    def clean_blocked(self):
        blocked = self.cleaned_data["blocked"]
        if not blocked.is_active:
            raise forms.ValidationError("This user is deactivated.")
        return blocked


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    """Adding and removing here runs the same services as a user's own
    block, so delivery changes the same way (pending messages are dropped)."""

    form = BlockForm
    list_display = ["blocker", "blocked", "created_at"]
    search_fields = ["blocker__username", "blocked__username"]
    autocomplete_fields = ["blocker", "blocked"]
    list_select_related = ["blocker", "blocked"]
    actions = ["remove_selected"]

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request, obj, form, change):
        block = services.block_create(blocker=obj.blocker, username=obj.blocked.username)
        obj.pk, obj.created_at = block.pk, block.created_at

    def delete_model(self, request, obj):
        try:
            services.block_delete(blocker=obj.blocker, username=obj.blocked.username)
        except ServiceError as e:
            self.message_user(request, e.message, messages.WARNING)

    @admin.action(description="Remove selected blocks", permissions=["delete"])
    def remove_selected(self, request, queryset):
        blocks = list(queryset.select_related("blocker", "blocked"))
        for block in blocks:
            self.delete_model(request, block)
        self.message_user(request, f"Removed {len(blocks)} block(s).")
