from django.contrib import admin
from django.urls import include, path

from proj.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),  # proj.middleware.API_PATH_PREFIX names this prefix
    path("", include("orders.urls")),
]
