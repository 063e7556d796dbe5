"""A bench-only email backend: builds each message exactly as the SMTP backend would, then records it.

The console backend would fill the worker logs and locmem keeps every message in memory (a growing worker);
this one pays the real cost of rendering the MIME message and appends one line per message to BENCH_MAIL_LOG,
so the harness can count emails sent and when: `<time> <bytes> <recipients> <Message-ID>`. The Message-ID names the
order and the kind of message (notifications/services.py), so the soak can count confirmations per order.
BENCH_MAIL_DELAY_SECONDS makes the mail server slow (a fault test catches a worker mid-send).
"""

import os
import time

from django.core.mail.backends.base import BaseEmailBackend


class RecordingBackend(BaseEmailBackend):
    def send_messages(self, email_messages) -> int:
        time.sleep(float(os.environ.get("BENCH_MAIL_DELAY_SECONDS", "0")))
        lines = []
        for message in email_messages:
            built = message.message()
            size = len(built.as_bytes())
            lines.append(f"{time.time()!r} {size} {','.join(message.to)} {built['Message-ID'] or '-'}\n")
        descriptor = os.open(os.environ["BENCH_MAIL_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, "".join(lines).encode())
        finally:
            os.close(descriptor)
        return len(email_messages)
