from django.urls import path

from bench.naive import views

urlpatterns = [
    path("api/orders", views.place_order_view),
    path("api/orders/<uuid:order_id>", views.order_view),
]
