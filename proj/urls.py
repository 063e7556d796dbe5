from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from ops import views as ops_views
from proj.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),  # core.api_errors.API_PATH_PREFIX names this prefix
    # Probes and metrics: plain HTTP inside the cluster (SECURE_REDIRECT_EXEMPT), no session, no redirect.
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics, name="metrics"),
    path("ops/", ops_views.ops_page, name="ops"),
    path("ops/data", ops_views.ops_data, name="ops-data"),
    path("", include("orders.urls")),
]
# Product images and thumbnails in development (static() serves nothing unless DEBUG is on); production serves
# MEDIA_URL from its shared storage instead (README "Offloading").
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
