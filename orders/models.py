import uuid

from django.db import models
from django.db.models.functions import Now

# What the services take as an order's id: its UUID, or the string of it that a message carries.
type OrderId = uuid.UUID | str
# Payment tokens are a provider's ids (Stripe's are about 30 characters); longer is not a token.
PAYMENT_TOKEN_MAX_LENGTH = 64


# Storage paths (under MEDIA_ROOT) of product images as uploaded, and of the thumbnails the heavy pool makes.
PRODUCT_IMAGE_DIRECTORY = "products/images"
PRODUCT_THUMBNAIL_DIRECTORY = "products/thumbnails"
# Room for the directory, a client's file name (Django keeps its last 100 characters at most) and a storage suffix.
STORED_FILE_NAME_MAX_LENGTH = 255


class ThumbnailStatus(models.TextChoices):
    NONE = "none"  # no image
    PENDING = "pending"  # an image waits for its thumbnail
    READY = "ready"
    FAILED = "failed"  # the sandbox refused or stopped it, or the task gave up: code and reason say why


class Product(models.Model):
    ThumbnailStatus = ThumbnailStatus

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3)
    # Units on hand. Reserved (decremented) when an order starts processing, released if it then fails.
    stock = models.IntegerField(default=0)
    # The picture as uploaded (PNG or JPEG); written only by orders.catalog.set_product_image.
    image = models.FileField(upload_to=PRODUCT_IMAGE_DIRECTORY, blank=True, max_length=STORED_FILE_NAME_MAX_LENGTH)
    # Counts every change of the image. A thumbnail task carries the version it was scheduled for and writes nothing
    # once the image has moved on, so a late task never puts an old picture's thumbnail on a newer image.
    image_version = models.PositiveIntegerField(default=0)
    # A PNG that fits 300x300, made from `image` in the WebAssembly sandbox (orders.catalog.make_product_thumbnail).
    thumbnail = models.FileField(
        upload_to=PRODUCT_THUMBNAIL_DIRECTORY, blank=True, editable=False, max_length=STORED_FILE_NAME_MAX_LENGTH
    )
    thumbnail_status = models.CharField(max_length=16, choices=ThumbnailStatus.choices, default=ThumbnailStatus.NONE)
    thumbnail_width = models.PositiveSmallIntegerField(null=True, blank=True)
    thumbnail_height = models.PositiveSmallIntegerField(null=True, blank=True)
    # Why there is no thumbnail: the sandbox's code (`image_too_large`, `memory_exhausted`, ...) and its one line.
    thumbnail_error_code = models.CharField(max_length=32, blank=True)
    thumbnail_error_reason = models.TextField(blank=True)
    # When the current image's thumbnail was made, or its failure recorded.
    thumbnail_finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            # The last line of defence against overselling: no code path can push stock below zero.
            models.CheckConstraint(condition=models.Q(stock__gte=0), name="product_stock_not_negative"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="product_price_not_negative"),
            models.CheckConstraint(
                condition=models.Q(thumbnail_status__in=ThumbnailStatus.values), name="product_thumbnail_status_valid"
            ),
            # A product has thumbnail work exactly when it has an image.
            models.CheckConstraint(
                condition=models.Q(image="", thumbnail_status=ThumbnailStatus.NONE)
                | (~models.Q(image="") & ~models.Q(thumbnail_status=ThumbnailStatus.NONE)),
                name="product_thumbnail_status_follows_image",
            ),
            # The storefront shows a ready thumbnail without looking further: it has its file and its size.
            models.CheckConstraint(
                condition=~models.Q(thumbnail_status=ThumbnailStatus.READY)
                | (~models.Q(thumbnail="") & models.Q(thumbnail_width__isnull=False, thumbnail_height__isnull=False)),
                name="product_ready_thumbnail_has_its_file",
            ),
            # A failure always says why.
            models.CheckConstraint(
                condition=~models.Q(thumbnail_status=ThumbnailStatus.FAILED) | ~models.Q(thumbnail_error_code=""),
                name="product_failed_thumbnail_has_a_code",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"

    @property
    def has_thumbnail(self) -> bool:
        return self.thumbnail_status == ThumbnailStatus.READY


# Status enums are module-level and attached to their model (`Order.Status`): Meta's constraints need them, and
# Meta cannot see the model's class body.
class OrderStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Order(models.Model):
    Status = OrderStatus
    FINAL_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    # The public id: unguessable, safe to put in URLs and emails.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField()
    region = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Computed from database prices when the order is placed; never from what the client sent.
    total = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    # The payment method to charge (a provider token); the sandbox gateway knows tok_visa, tok_chargeDeclined, ...
    payment_token = models.CharField(max_length=PAYMENT_TOKEN_MAX_LENGTH)
    # The provider's charge id, set when the charge succeeded.
    payment_reference = models.CharField(max_length=64, blank=True)
    # ntfy topic for a push notification, if the customer asked for one.
    push_topic = models.CharField(max_length=64, blank=True)
    failure_reason = models.TextField(blank=True)
    # Where it was processed: its region, `public` (the public pool, for a region that may use it), or '' (not yet,
    # or by a worker of no region). Set by the worker that takes it into processing and that finishes it.
    processed_in = models.CharField(max_length=32, blank=True)
    # How many times processing started or resumed (more than 1 means a worker died or a message came twice).
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"], name="order_created_idx"),
            # The reconciler looks for orders stuck in a non-final status.
            models.Index(
                fields=["status", "updated_at"],
                condition=models.Q(status__in=[OrderStatus.PENDING, OrderStatus.PROCESSING]),
                name="order_unfinished_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(total__gte=0), name="order_total_not_negative"),
            models.CheckConstraint(condition=models.Q(status__in=OrderStatus.values), name="order_status_valid"),
        ]

    def __str__(self) -> str:
        return f"Order {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_items")
    quantity = models.PositiveIntegerField()
    # The price when the order was placed: later catalog changes do not rewrite history.
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="order_item_quantity_positive"),
            models.UniqueConstraint(fields=["order", "product"], name="order_item_product_once"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id}"


class OrderEvent(models.Model):
    """The order's status timeline, appended by every transition and never updated."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    status = models.CharField(max_length=16, choices=OrderStatus.choices)
    note = models.TextField(blank=True)
    # The worker that made the change (its node name), when a worker did.
    worker = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.order_id} -> {self.status}"


class IdempotencyKey(models.Model):
    """The response to a request that carried an `Idempotency-Key` header, replayed when the request is retried.

    Written in the transaction that placed the order, so the order and its stored response commit together or not
    at all. Only successful responses are stored: a request that failed created nothing and may be corrected and
    retried under the same key.
    """

    # The client's key (a UUID, typically), unique across clients: the API has no accounts to scope it by.
    key = models.CharField(max_length=255, unique=True)
    # SHA-256 of the method, path and body: a retry must send the very same request, else it is refused with 422.
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    # The exact bytes sent the first time (as text): a replay is byte-for-byte the original response.
    response_body = models.TextField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            # Pruning deletes the keys older than their time to live.
            models.Index(fields=["created_at"], name="idempotency_key_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.key} -> {self.response_status}"
