"""Hub failures → one clear sentence; 429 and 5xx retried with bounded exponential backoff.

Every call wbcgen makes to the Hub goes through :func:`call_hub`, so the HTTP status of
a failure (401, 403, 404, 429, 5xx) always becomes the same :class:`UserError` text, and
tokens can never leak into a message (:func:`redact`).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from classifiers.runtime import UserError

ATTEMPTS = 4          # 1 try + 3 retries
BASE_DELAY = 1.0      # seconds; doubles every retry: 1, 2, 4
MAX_DELAY = 30.0      # never wait longer than this for one retry (Retry-After included)


class HubError(UserError):
    """A Hub request failed; the message is one sentence and never holds a token."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(redact(message))
        self.status = status


def _token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # a broken token file must not hide the real error
        return os.environ.get("HF_TOKEN")


def redact(text: str) -> str:
    """Remove the active Hub token (HF_TOKEN or the login cache) from ``text``."""
    for tok in {os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"), _token()}:
        if tok and len(tok) >= 8:
            text = text.replace(tok, "hf_***")
    return text


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def http_status(e: BaseException) -> int | None:
    """The HTTP status behind ``e`` (huggingface_hub wraps it in other errors sometimes)."""
    for x in _chain(e):
        resp = getattr(x, "response", None)
        code = getattr(resp, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _retry_after(e: BaseException) -> float | None:
    for x in _chain(e):
        resp = getattr(x, "response", None)
        headers = getattr(resp, "headers", None)
        if headers is not None:
            try:
                return float(headers.get("Retry-After"))
            except (TypeError, ValueError):
                return None
    return None


def is_retryable(e: BaseException) -> bool:
    code = http_status(e)
    return code is not None and (code == 429 or 500 <= code < 600)


def _has(e: BaseException, name: str) -> bool:
    return any(type(c).__name__ == name or any(b.__name__ == name for b in type(c).__mro__) for c in _chain(e))


def explain(e: BaseException, *, repo_id: str, repo_type: str = "model", revision: str | None = None,
            action: str = "access", attempts: int = 1) -> HubError:
    """Turn any Hub exception into a one-sentence :class:`HubError`."""
    what = f"{repo_type} repo {repo_id}"
    code = http_status(e)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if _has(e, "LocalTokenNotFoundError"):
        msg = f"No Hub token found to {action} the {what}: set HF_TOKEN or run `hf auth login`."
    elif _has(e, "HFValidationError"):
        msg = f"{repo_id!r} is not a valid Hub repo id: use the form USER/NAME."
    elif _has(e, "RevisionNotFoundError"):
        msg = f"Revision {revision or 'main'!r} does not exist in {what}: check --revision."
    elif _has(e, "GatedRepoError"):
        msg = f"The {what} is gated: request access on its Hub page and log in with an approved token."
    elif code == 401:
        msg = (f"The Hub refused to {action} the {what} without valid credentials (HTTP 401): set HF_TOKEN or "
               f"run `hf auth login`, and check that the repo exists.")
    elif code == 403:
        msg = (f"Your Hub token is not allowed to {action} the {what} (HTTP 403): use a token with "
               f"{'write' if action in ('push to', 'create') else 'read'} access to it.")
    elif code == 404 or _has(e, "RepositoryNotFoundError"):
        msg = (f"The {what} was not found on the Hub (HTTP 404): check the name and --repo-type, "
               f"or log in if it is private.")
    elif code == 429:
        msg = f"The Hub rate-limited the requests for the {what} (HTTP 429){tries}: wait a few minutes and retry."
    elif code is not None and 500 <= code < 600:
        msg = f"The Hub had a server error (HTTP {code}) for the {what}{tries}: try again later."
    elif code is not None:
        msg = f"The Hub answered HTTP {code} for the {what}: check the repo id, revision and your token."
    elif action in ("push to", "create") and (_has(e, "OfflineModeIsEnabled") or _offline()):
        msg = (f"Cannot upload to the {what}: HF_HUB_OFFLINE=1 forbids any Hub access; unset HF_HUB_OFFLINE to "
               f"push, or use --dry-run --to DIR to write the repo locally.")
    elif action in ("push to", "create") and (_has(e, "ConnectError") or _has(e, "TimeoutException")
                                              or _has(e, "LocalEntryNotFoundError")):
        msg = (f"Could not reach the Hub to upload to the {what}: check your network and try again "
               f"(nothing was uploaded).")
    elif _has(e, "OfflineModeIsEnabled") or (_has(e, "LocalEntryNotFoundError") and _offline()):
        msg = (f"The {what} (revision {revision or 'main'}) is not in the local Hub cache and HF_HUB_OFFLINE=1 "
               f"forbids downloading it: unset HF_HUB_OFFLINE, or download it once while online.")
    elif _has(e, "IncompleteSnapshotError"):
        msg = f"The cached copy of the {what} is incomplete and the Hub cannot be reached: download it again online."
    elif _has(e, "LocalEntryNotFoundError") or _has(e, "ConnectError") or _has(e, "TimeoutException"):
        msg = (f"Could not reach the Hub for the {what} and it is not in the local cache: check your network, "
               f"or set HF_HUB_OFFLINE=1 to use cached files only.")
    else:
        msg = f"Hub request for the {what} failed ({type(e).__name__})."
    return HubError(msg, code)


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.is_offline_mode())
    except Exception:
        return False


def _sleep(seconds: float) -> None:
    """The default wait between retries (tests replace it to run instantly)."""
    time.sleep(seconds)


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def call_hub(fn: Callable[[], Any], *, repo_id: str, repo_type: str = "model", revision: str | None = None,
             action: str = "access", attempts: int = ATTEMPTS, base_delay: float = BASE_DELAY,
             sleep: Callable[[float], None] | None = None, warn: Callable[[str], None] = _warn) -> Any:
    """Run ``fn()``; retry 429/5xx with exponential backoff; map every failure to :class:`HubError`.

    ``sleep`` defaults to :func:`_sleep` (looked up at call time, so tests can make it
    instant). At most ``attempts`` calls are made and no single wait exceeds ``MAX_DELAY``.
    """
    sleep = sleep or _sleep
    for i in range(1, attempts + 1):
        try:
            return fn()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - every Hub failure is reported the same way
            if i < attempts and is_retryable(e):
                delay = min(MAX_DELAY, base_delay * 2 ** (i - 1))
                ra = _retry_after(e) if http_status(e) == 429 else None
                if ra is not None and ra > 0:
                    delay = min(MAX_DELAY, ra)
                warn(f"Hub busy (HTTP {http_status(e)}) for {repo_id}; retrying in {delay:g}s "
                     f"(attempt {i + 1}/{attempts}).")
                sleep(delay)
                continue
            raise explain(e, repo_id=repo_id, repo_type=repo_type, revision=revision, action=action,
                          attempts=i) from None
    raise AssertionError("unreachable")
