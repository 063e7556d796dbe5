from django.contrib import admin
from django.urls import include, path

from proj import views
from proj.api import api
from proj.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),  # proj.middleware.API_PATH_PREFIX names this prefix
    # Probes and metrics: plain HTTP inside the cluster (SECURE_REDIRECT_EXEMPT), no session, no redirect.
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("ops/", views.ops_page, name="ops"),
    path("ops/data", views.ops_data, name="ops-data"),
    path("", include("orders.urls")),
]
