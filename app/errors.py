"""Every failure becomes a JSON ``{"detail", "code"}`` body with a precise status; never a stack trace."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class APIError(StarletteHTTPException):
    """An error with a status, a machine-readable code and a message for people."""

    def __init__(self, status_code: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code


class PayloadTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, "payload_too_large",
                         f"request body exceeds the {limit / 1024 / 1024:g} MB limit (SER_MAX_UPLOAD_MB)")


def error_body(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


async def send_error(send: Send, status: int, code: str, detail: str,
                     headers: list[tuple[bytes, bytes]] = ()) -> None:
    """The same JSON error body, sent by ASGI middleware that answers before the app is called."""
    body = json.dumps({"detail": detail, "code": code}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


#: What the service decodes: the 415 answer says so.
FORMATS = "WAV (8/16/24/32-bit integer or float, any sample rate, mono or stereo); FLAC, OGG, AIFF and MP3 too"


def _audio_errors() -> list[tuple[type[Exception], int, str, str]]:
    """The one mapping of the audio errors (speech_emotion's and the upload limit) to HTTP: exception class,
    status, code, what to add to its message. Their messages already name the upload (app/inference.py)."""
    from app.inference import AudioTooLongError
    from speech_emotion.audio import AudioDecodeError, AudioInvalidError, AudioTooShortError
    from speech_emotion.speech import NoSpeechError

    return [(NoSpeechError, 422, "no_speech", ""), (AudioTooShortError, 422, "audio_too_short", ""),
            (AudioTooLongError, 413, "audio_too_long", ""),
            (AudioInvalidError, 422, "invalid_audio", ""),  # before its base class, AudioDecodeError
            (AudioDecodeError, 415, "unsupported_audio", f". Send {FORMATS}.")]


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "unprocessable", 503: "unavailable"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _CODES.get(exc.status_code, "error")
        return error_body(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(tuple(e.get("loc", ())) == ("body", "file") for e in errors):
            return error_body(400, "missing_file",
                              "no file uploaded: send the audio as multipart/form-data in a field named 'file', "
                              "e.g. curl -F file=@clip.wav http://localhost:8000/predict")
        if any(tuple(e.get("loc", ())) == ("body", "files") for e in errors):
            return error_body(400, "missing_file",
                              "no files uploaded: send a speaker's recordings as multipart/form-data, each in a "
                              "field named 'files', e.g. curl -F files=@a.wav -F files=@b.wav "
                              "http://localhost:8000/profile")
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors)
        return error_body(422, "invalid_request", f"invalid request: {where}")

    for cls, status, code, advice in _audio_errors():
        def audio_error(request: Request, exc: Exception, status=status, code=code, advice=advice) -> JSONResponse:
            return error_body(status, code, f"{exc}{advice}")

        app.add_exception_handler(cls, audio_error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_body(500, "internal_error", "internal error; the server log has the details")


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 while they arrive, before they are buffered.

    A declared Content-Length over the limit is refused before reading anything; a body without one
    (chunked) is counted as it streams in and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException, so FastAPI's body parsing re-raises it unchanged (it wraps others in 400).
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        exc = PayloadTooLarge(self.max_bytes)
        await send_error(send, 413, exc.code, exc.detail, [(b"connection", b"close")])
