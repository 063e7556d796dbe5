"""A real local HTTP server that speaks enough of AWS Lambda's Invoke API to record what the export sends.

`POST /2015-03-31/functions/{name}/invocations` answers 202 with an empty body for an `Event` invocation, as Lambda
does, or an error the way Lambda sends one: the code in the `x-amzn-ErrorType` header and a JSON body with the
message (botocore reads both). Point a client at it with `AWS_ENDPOINT_URL_LAMBDA`. It checks nothing of the
signature but records the `Authorization` header, so a test can see which credentials and region signed a request.
"""

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")

# Lambda's errors for Invoke: HTTP status, x-amzn-ErrorType, and the body's fields (botocore's model names them).
ERRORS = {
    "TooManyRequestsException": (
        429,
        {"Type": "User", "message": "Rate Exceeded.", "Reason": "CallerRateLimitExceeded"},
    ),
    "ServiceException": (500, {"Type": "Service", "Message": "An internal error occurred."}),
    "ResourceNotReadyException": (502, {"Type": "Service", "message": "The function is being reactivated."}),
    "ResourceNotFoundException": (404, {"Type": "User", "Message": "Function not found: {function}"}),
    "AccessDeniedException": (403, {"Message": "User is not authorized to perform: lambda:InvokeFunction"}),
    "RequestTooLargeException": (413, {"Type": "User", "message": "Request must be smaller than 1048576 bytes."}),
    "InvalidRequestContentException": (400, {"Type": "User", "message": "Could not parse request body into json."}),
}


@dataclass
class Invocation:
    function_name: str
    invocation_type: str
    authorization: str
    body: bytes
    # The status this request was answered with.
    status: int
    # When it arrived (time.time()), to compare with the events' `occurred_at`.
    received_at: float

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


@dataclass
class LambdaServer:
    url: str = ""
    # Every request, in the order received (answered or refused).
    invocations: list[Invocation] = field(default_factory=list)
    # Error codes (keys of ERRORS) to answer, one per request, before accepting again.
    next_errors: list[str] = field(default_factory=list)
    # The error to answer every request with, after `next_errors`; None accepts.
    always: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Invocation]:
        with self.lock:
            return [invocation for invocation in self.invocations if invocation.status == 202]

    def received_event_ids(self) -> list[str]:
        """The id of every event the function accepted, once per time it arrived."""
        return [event["event_id"] for invocation in self.accepted() for event in invocation.payload["events"]]

    def statuses(self) -> list[int]:
        with self.lock:
            return [invocation.status for invocation in self.invocations]

    def _answer(self) -> str | None:
        with self.lock:
            if self.next_errors:
                return self.next_errors.pop(0)
            return self.always


def start_lambda_server() -> tuple[LambdaServer, ThreadingHTTPServer]:
    state = LambdaServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Lambda's endpoint: botocore reuses its connections

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            match = INVOKE_PATH.match(self.path.partition("?")[0])
            if match is None:
                self._send(404, {"x-amzn-ErrorType": "UnknownOperationException"}, b'{"message": "Unknown path."}')
                return
            function_name = unquote(match["name"])
            error = state._answer()
            status = ERRORS[error][0] if error else 202
            with state.lock:
                state.invocations.append(
                    Invocation(
                        function_name=function_name,
                        invocation_type=self.headers.get("X-Amz-Invocation-Type", "RequestResponse"),
                        authorization=self.headers.get("Authorization", ""),
                        body=body,
                        status=status,
                        received_at=time.time(),
                    )
                )
            if error is None:
                self._send(202, {}, b"")
                return
            fields = {key: value.format(function=function_name) for key, value in ERRORS[error][1].items()}
            self._send(status, {"x-amzn-ErrorType": error}, json.dumps(fields).encode())

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server
