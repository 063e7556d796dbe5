"""The storefront: the catalog with its order form, and the page that follows one order."""

from django.urls import path

from orders import views

app_name = "storefront"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("orders/<uuid:order_id>/", views.order_page, name="order"),
]
