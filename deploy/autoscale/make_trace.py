"""Writes the shipped trace `traces/daily-cycle-with-spike.csv`: two days of orders per second, one row a minute.

A synthetic trace, not a recording: the shop has no production traffic yet. Its shape is the usual one of a
European web shop: a trough of about 20 orders/s at 04:00, a lunch bump, the day's peak of about 250 orders/s
at 20:00, 5 % more on the second day, and +-5 % noise (seeded, so the file is the same on every run). On the
second day at 14:00 a flash sale adds 700 orders/s within a minute, holds 10 minutes and fades over about
5 minutes: what yesterday cannot predict. Regenerate with `python -m deploy.autoscale.make_trace > FILE`.
"""

import math
import random
import sys

ROW_SECONDS = 60
DAYS = 2
TROUGH, PEAK = 20.0, 250.0
SECOND_DAY_GROWTH = 1.05
NOISE = 0.05
SPIKE_START_HOUR, SPIKE_EXTRA, SPIKE_HOLD_SECONDS, SPIKE_FADE_SECONDS = 14.0, 700.0, 600, 300
SEED = 13


def daily_rate(hour: float) -> float:
    """Trough at 04:00, rising for 16 hours to the peak at 20:00, falling for 8; a lunch bump at 12:30."""
    phase = (hour - 4.0) % 24.0
    if phase < 16.0:
        shape = (1 - math.cos(math.pi * phase / 16.0)) / 2
    else:
        shape = (1 + math.cos(math.pi * (phase - 16.0) / 8.0)) / 2
    lunch = 0.25 * math.exp(-(((hour - 12.5) / 0.75) ** 2))
    return TROUGH + (PEAK - TROUGH) * min(shape + lunch, 1.0)


def spike(seconds_into_day: int) -> float:
    since = seconds_into_day - SPIKE_START_HOUR * 3600
    if since < 0:
        return 0.0
    if since < ROW_SECONDS:
        return SPIKE_EXTRA * since / ROW_SECONDS
    if since < SPIKE_HOLD_SECONDS:
        return SPIKE_EXTRA
    return SPIKE_EXTRA * math.exp(-(since - SPIKE_HOLD_SECONDS) / (SPIKE_FADE_SECONDS / 3))


def main() -> None:
    noise = random.Random(SEED)  # noqa: S311 - a reproducible trace, not a secret
    writer = sys.stdout
    writer.write("seconds,orders_per_second\n")
    for second in range(0, DAYS * 86_400, ROW_SECONDS):
        day, into_day = divmod(second, 86_400)
        rate = daily_rate(into_day / 3600) * (SECOND_DAY_GROWTH if day else 1.0)
        rate *= 1 + noise.uniform(-NOISE, NOISE)
        if day == DAYS - 1:
            rate += spike(into_day)
        writer.write(f"{second},{rate:.1f}\n")


if __name__ == "__main__":
    main()
