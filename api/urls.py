from django.urls import path

from api import views
from api.v1 import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
]
