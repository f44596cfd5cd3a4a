from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from studio import views

studio_patterns = [
    path("", views.home, name="home"),
    path("assets/<uuid:asset_id>/file", views.asset_file, name="asset-file"),
    path("assets/<uuid:asset_id>/thumbnail", views.asset_thumbnail, name="asset-thumbnail"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("generation.urls")),
    path("", include((studio_patterns, "studio"))),
]
