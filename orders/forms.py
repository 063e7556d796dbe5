"""The storefront's order form: a quantity per product, email, region and a sandbox card."""

import re
from collections.abc import Iterable
from typing import Any, cast

from django import forms
from django.conf import settings

from core.errors import ApplicationError
from orders.models import Product
from orders.payments import SandboxGateway
from orders.services import RequestedItem

# How the service names a field of an order's item: `items[0].sku`, `items[1].quantity`.
ORDER_ITEM_FIELD = re.compile(r"items\[(\d+)\]\.\w+")


class PlaceOrderForm(forms.Form):
    email = forms.EmailField(max_length=254, label="Email", help_text="Where we send the confirmation.")
    region = forms.ChoiceField(label="Delivery region")
    payment_token = forms.ChoiceField(
        label="Payment",
        # The sandbox's test cards by what they do: the shop has no real payment provider yet.
        choices=[(token, description.capitalize()) for token, description in SandboxGateway.TOKENS.items()],
        initial="tok_visa",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, products: Iterable[Product], **kwargs) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.products = list(products)
        region_field = cast(forms.ChoiceField, self.fields["region"])
        region_field.choices = [(region, region.upper()) for region in settings.ORDER_REGIONS]
        for product in self.products:
            self.fields[self.quantity_field_name(product)] = forms.IntegerField(
                label=f"Quantity of {product.name}",
                min_value=0,
                max_value=settings.ORDER_MAX_QUANTITY_PER_ITEM,
                initial=0,
                required=False,
                # Reserved when the order is processed: an order for a product out of stock would only fail.
                disabled=product.stock <= 0,
            )

    @staticmethod
    def quantity_field_name(product: Product) -> str:
        return f"quantity_{product.pk}"

    def product_rows(self) -> list[tuple[Product, forms.BoundField]]:
        """Each product with its quantity field, for the template."""
        return [(product, self[self.quantity_field_name(product)]) for product in self.products]

    def clean(self) -> dict[str, Any] | None:
        cleaned_data = super().clean()
        quantities_valid = not any(self.has_error(self.quantity_field_name(product)) for product in self.products)
        if quantities_valid and not self.requested_items():
            raise forms.ValidationError("Choose a quantity of at least one product.", code="no_items")
        return cleaned_data

    def requested_items(self) -> list[RequestedItem]:
        """The products chosen, in catalog order (the order the service names them: items[0], items[1], ...)."""
        return [
            RequestedItem(sku=product.sku, quantity=quantity)
            for product in self.products
            if (quantity := self.cleaned_data.get(self.quantity_field_name(product))) and quantity > 0
        ]

    def add_service_error(self, error: ApplicationError) -> None:
        """Show an error the service raised next to the field it names, or above the form."""
        if not error.fields:
            self.add_error(None, error.message)
            return
        products_ordered = [
            product for product in self.products if (self.cleaned_data.get(self.quantity_field_name(product)) or 0) > 0
        ]
        for name, message in error.fields.items():
            self.add_error(self._field_named(name, products_ordered), message)

    def _field_named(self, service_name: str, products_ordered: list[Product]) -> str | None:
        """The form field behind a service's field name: `items[1].sku` is the second product ordered."""
        item = ORDER_ITEM_FIELD.fullmatch(service_name)
        if item is not None and int(item.group(1)) < len(products_ordered):
            return self.quantity_field_name(products_ordered[int(item.group(1))])
        return service_name if service_name in self.fields else None
