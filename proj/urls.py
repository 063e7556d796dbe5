from django.contrib import admin
from django.urls import path

from proj import views
from proj.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    # Probes and metrics: plain HTTP inside the cluster (SECURE_REDIRECT_EXEMPT), no session, no redirect.
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("ops/", views.ops_page, name="ops"),
    path("ops/data", views.ops_data, name="ops-data"),
]
