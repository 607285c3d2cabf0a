"""The REST API's endpoints: thin, each parses, calls one service or query, and answers.

Every query starts from ``request.user``: another person's key id is a 404, never a 403, so
ids cannot be probed.
"""

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from accounts.models import ApiKey
from accounts.services import create_api_key
from accounts.site import client_ip
from api import serializers as shapes
from billing import notices, subkeys
from billing import services as billing
from billing.models import UsageLog, VipTier
from billing.price_list import price_list
from billing.pricing import group_ratio_for
from billing.redemption import RedemptionRefused, redeem_code
from billing.tiers import TierRefused, buy_tier, current_membership

_UNSET = object()


def balance_of(user) -> dict:
    user.refresh_from_db(fields=["quota", "used_quota", "request_count"])
    return {
        "quota": user.quota,
        "usd": shapes.usd(user.quota),
        "used_quota": user.used_quota,
        "used_usd": shapes.usd(user.used_quota),
        "request_count": user.request_count,
    }


class ProfileView(APIView):
    @extend_schema(responses=shapes.ProfileSerializer)
    def get(self, request):
        """Who you are: group, invite code, balance and VIP tier."""
        user = request.user
        body = {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "group": user.group,
            "invite_code": user.invite_code,
            "balance": balance_of(user),
            "tier": current_membership(user),
            "low_balance_threshold": user.low_balance_threshold,
        }
        return Response(shapes.ProfileSerializer(body).data)

    @extend_schema(request=shapes.ProfileUpdateSerializer, responses=shapes.ProfileSerializer)
    def patch(self, request):
        """Set your low-balance notice's threshold (null: off)."""
        form = shapes.ProfileUpdateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        notices.set_low_balance_threshold(
            user=request.user, threshold=form.validated_data["low_balance_threshold"]
        )
        return self.get(request)


class BalanceView(APIView):
    @extend_schema(responses=shapes.BalanceSerializer)
    def get(self, request):
        """Your balance and what you spent, in quota units (500,000 = $1) and dollars."""
        return Response(shapes.BalanceSerializer(balance_of(request.user)).data)


class RedeemThrottle(UserRateThrottle):
    scope = "redeem"


class RedeemView(APIView):
    throttle_classes = [RedeemThrottle]

    @extend_schema(
        request=shapes.RedeemSerializer,
        responses={
            200: shapes.RedeemedSerializer,
            400: OpenApiResponse(shapes.RefusalSerializer, description="unknown, used, ..."),
            429: OpenApiResponse(shapes.RefusalSerializer, description="too many wrong codes"),
        },
    )
    def post(self, request):
        """Redeem a code: its quota goes to your balance, once."""
        form = shapes.RedeemSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            credited = redeem_code(
                user=request.user, code=form.validated_data["code"], ip=client_ip(request)
            )
        except RedemptionRefused as refusal:
            code = 429 if refusal.reason == "too_many_attempts" else 400
            return Response({"reason": refusal.reason, "detail": refusal.message}, status=code)
        body = {
            "credited": credited,
            "credited_usd": shapes.usd(credited),
            "balance": balance_of(request.user),
        }
        return Response(shapes.RedeemedSerializer(body).data)


class PricingView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=shapes.PricingSerializer)
    def get(self, request):
        """Every model's price as you pay it (your group's ratio included); anonymous
        visitors see the default group's prices."""
        group = request.user.group if request.user.is_authenticated else "default"
        ratio = group_ratio_for(group)
        body = {"group": group, "group_ratio": ratio, "models": price_list(group_ratio=ratio)}
        return Response(shapes.PricingSerializer(body).data)


class TiersView(APIView):
    @extend_schema(responses=shapes.TierSerializer(many=True))
    def get(self, request):
        """The VIP tiers for sale."""
        tiers = VipTier.objects.filter(is_active=True).order_by("price")
        return Response(shapes.TierSerializer(tiers, many=True).data)


class BuyTierView(APIView):
    @extend_schema(
        request=None,
        responses={200: shapes.ProfileSerializer, 400: shapes.RefusalSerializer},
    )
    def post(self, request, tier_id: int):
        """Buy a tier with your balance (its price, and the credit it includes)."""
        tier = get_object_or_404(VipTier, id=tier_id, is_active=True)
        try:
            buy_tier(user=request.user, tier=tier)
        except TierRefused as refusal:
            return Response({"reason": refusal.reason, "detail": refusal.message}, status=400)
        return ProfileView().get(request)


# --- Keys --------------------------------------------------------------------------------------


def _settings_of(data: dict) -> dict:
    return {
        name: data[name]
        for name in ("name", "expires_at", "allowed_models", "allowed_ips")
        if name in data
    }


class KeysView(APIView):
    @extend_schema(responses=shapes.ApiKeySerializer(many=True))
    def get(self, request):
        """Your keys (never the keys themselves: reveal one on the site)."""
        keys = ApiKey.objects.filter(user=request.user).order_by("-id")
        return Response(shapes.ApiKeySerializer(keys, many=True).data)

    @extend_schema(
        request=shapes.KeyCreateSerializer,
        responses={
            201: shapes.NewApiKeySerializer,
            400: OpenApiResponse(description="invalid settings"),
        },
        description="Make a key, or with `count` that many alike (answered as "
        '`{"keys": [...]}`). Each key is in the answer this once.',
    )
    def post(self, request):
        form = shapes.KeyCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        count, carve = data.get("count"), data.get("carve")
        if carve is not None and not request.user.is_reseller:
            return _refused("not_reseller", "Only resellers can carve sub-keys.", status=403)
        made = []
        try:
            with transaction.atomic():
                for _ in range(count or 1):
                    key, clear = create_api_key(
                        user=request.user, quota=data.get("quota"), **_settings_of(data)
                    )
                    if carve is not None:
                        subkeys.carve_key(api_key=key, amount=carve, by=request.user)
                    key.key = clear
                    made.append(key)
        except subkeys.SubkeyRefused as refusal:  # nothing was made
            return _refused(refusal.reason, refusal.message)
        if count is None:
            return Response(shapes.NewApiKeySerializer(made[0]).data, status=201)
        return Response({"keys": shapes.NewApiKeySerializer(made, many=True).data}, status=201)


class KeyView(APIView):
    def _key(self, request, key_id: int) -> ApiKey:
        return get_object_or_404(ApiKey, id=key_id, user=request.user)

    @extend_schema(responses=shapes.ApiKeySerializer)
    def get(self, request, key_id: int):
        """One of your keys."""
        return Response(shapes.ApiKeySerializer(self._key(request, key_id)).data)

    @extend_schema(request=shapes.KeyUpdateSerializer, responses=shapes.ApiKeySerializer)
    def patch(self, request, key_id: int):
        """Change a key's name, status, expiry, models, IPs or allowance (``quota``: null
        makes it unlimited; a number is ledgered)."""
        key = self._key(request, key_id)
        form = shapes.KeyUpdateSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        if key.carved and "quota" in data:
            return _refused("carved_key", "A sub-key's balance is topped up, not set.")
        if key.revoked_at is not None and data.get("status") == ApiKey.Status.ENABLED:
            return _refused("revoked", "A revoked sub-key stays disabled.")
        with transaction.atomic():
            changed = _settings_of(data)
            if "status" in data:
                changed["status"] = data["status"]
            for name, value in changed.items():
                setattr(key, name, value)
            if changed:
                key.save(update_fields=list(changed))
            if "quota" in data:
                billing.set_key_limit(api_key=key, remaining=data["quota"], note="set by API")
        key.refresh_from_db()
        return Response(shapes.ApiKeySerializer(key).data)

    @extend_schema(responses={204: None, 400: shapes.RefusalSerializer})
    def delete(self, request, key_id: int):
        """Delete a key: calls made with it stop at once. A sub-key is revoked instead."""
        key = self._key(request, key_id)
        if key.carved:
            return _refused("carved_key", "A sub-key is revoked, not deleted.")
        key.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


def _refused(reason: str, detail: str, *, status: int = 400) -> Response:
    return Response({"reason": reason, "detail": detail}, status=status)


class KeyTopUpView(APIView):
    @extend_schema(
        request=shapes.AmountSerializer,
        responses={200: shapes.ApiKeySerializer, 400: shapes.RefusalSerializer},
    )
    def post(self, request, key_id: int):
        """Move ``amount`` more quota from your balance into one of your sub-keys."""
        key = get_object_or_404(ApiKey, id=key_id, user=request.user)
        form = shapes.AmountSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            subkeys.top_up_key(api_key=key, amount=form.validated_data["amount"], by=request.user)
        except subkeys.SubkeyRefused as refusal:
            return _refused(refusal.reason, refusal.message)
        return Response(shapes.ApiKeySerializer(key).data)


class KeyRevokeView(APIView):
    @extend_schema(
        request=None, responses={200: shapes.RevokedSerializer, 400: shapes.RefusalSerializer}
    )
    def post(self, request, key_id: int):
        """Revoke one of your sub-keys: it stops at once and what is left of its balance
        comes back to yours (what calls in flight leave unspent follows within minutes)."""
        key = get_object_or_404(ApiKey, id=key_id, user=request.user)
        try:
            returned = subkeys.revoke_key(api_key=key, by=request.user)
        except subkeys.SubkeyRefused as refusal:
            return _refused(refusal.reason, refusal.message)
        body = {"returned": returned, "returned_usd": shapes.usd(returned), "key": key}
        return Response(shapes.RevokedSerializer(body).data)


# --- Logs --------------------------------------------------------------------------------------


class NewestFirst(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class LogsView(APIView):
    @extend_schema(
        parameters=[shapes.LogFilterSerializer],
        responses=inline_serializer(
            "UsagePage",
            {
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": shapes.UsageSerializer(many=True),
            },
        ),
    )
    def get(self, request):
        """Your calls, newest first, by cursor (``next``), filtered by time, key, model or
        status."""
        form = shapes.LogFilterSerializer(data=request.query_params)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        rows = UsageLog.objects.filter(user=request.user)
        if "start" in data:
            rows = rows.filter(created_at__gte=data["start"])
        if "end" in data:
            rows = rows.filter(created_at__lt=data["end"])
        if "key" in data:
            rows = rows.filter(api_key_id=data["key"])
        if "model" in data:
            rows = rows.filter(model=data["model"])
        if "status" in data:
            rows = rows.filter(status=data["status"])
        pages = NewestFirst()
        page = pages.paginate_queryset(rows, request, view=self)
        return pages.get_paginated_response(shapes.UsageSerializer(page, many=True).data)
