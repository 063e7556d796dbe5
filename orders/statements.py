"""The order workflow's hand-written SQL: each is one statement where the ORM would need several round trips.

Table and column names come from the models; every value is a parameter.
"""

from typing import cast

from django.db import connection
from django.db.models import Field

from orders.models import Order, OrderEvent, OrderId, OrderItem, Product


def transition(
    order_id: OrderId,
    *,
    source: tuple[str, ...],
    target: str,
    note: str = "",
    worker: str = "",
    count_attempt: bool = False,
    **changes,
) -> Order | None:
    """Move the order from one of `source` to `target` and append the timeline entry (with the worker that made it,
    if one did); None if not in `source`.

    One statement (a data-modifying CTE): the guard, the change and its timeline entry cannot come apart, and they
    cost one round trip, which matters on the hot path.
    """
    assignments = ["status = %s", "updated_at = statement_timestamp()"]
    params: list = [target]
    for field_name, value in changes.items():
        field = cast(Field, Order._meta.get_field(field_name))  # a column of the order, never a relation
        assignments.append(f"{field.column} = %s")
        params.append(value)
    if count_attempt:
        assignments.append("attempts = attempts + 1")
    sql = f"""
        WITH moved AS (
            UPDATE {Order._meta.db_table} SET {", ".join(assignments)}
            WHERE id = %s AND status = ANY(%s)
            RETURNING *
        ), appended AS (
            INSERT INTO {OrderEvent._meta.db_table} (order_id, status, note, worker, created_at)
            SELECT id, status, %s, %s, statement_timestamp() FROM moved
        )
        SELECT * FROM moved
    """  # noqa: S608 - table and column names come from our models; every value is a parameter
    params += [str(order_id), list(source), note, worker]
    return next(iter(Order.objects.raw(sql, params)), None)


def take_stock(order_id: OrderId) -> list[tuple[str, str, int, int]]:
    """Take every item's units from stock, or none when one product is short; return (sku, name, stock, quantity)
    per item in product id order, `stock` as it was before, so the caller can tell which were short.

    One statement: lock the order's products in id order (two orders sharing products cannot deadlock), then take
    every item's units, or none of them when one product is short. The stock >= 0 constraint backs it up. NO KEY
    UPDATE, the lock an UPDATE of stock takes anyway: it does not wait for (or block) the KEY SHARE locks that
    placing an order takes on its products (foreign key checks), which deadlocked with FOR UPDATE.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH wanted AS (
                SELECT product.id, product.sku, product.name, product.stock, item.quantity
                FROM {Product._meta.db_table} product
                JOIN {OrderItem._meta.db_table} item ON item.product_id = product.id
                WHERE item.order_id = %s
                ORDER BY product.id
                FOR NO KEY UPDATE OF product
            ), taken AS (
                UPDATE {Product._meta.db_table} product SET stock = product.stock - wanted.quantity
                FROM wanted
                WHERE product.id = wanted.id AND NOT EXISTS (SELECT 1 FROM wanted WHERE stock < quantity)
            )
            SELECT sku, name, stock, quantity FROM wanted ORDER BY id
            """,  # noqa: S608 - table names come from our models; the value is a parameter
            [str(order_id)],
        )
        return cursor.fetchall()
