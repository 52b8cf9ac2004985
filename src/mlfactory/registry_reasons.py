"""What the registry's errors say (`registry`): MLflow's refusals in one useful line, without a
store's password and with the hint a refusal for want of credentials needs; what a `models:/`
URI names that the store lacks; and the filter that looks a registered model up by name (which
decides which names can be looked up at all)."""

from __future__ import annotations

from typing import Any

from mlfactory.errors import BundleError
from mlfactory.mlflow_store import hide_password

# MLflow's error codes for a request its server refused for want of credentials (HTTP 401, 403).
CREDENTIAL_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED")
CREDENTIAL_HINT = (
    "the MLflow server wants credentials: set MLFLOW_TRACKING_USERNAME and "
    "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
)


def mlflow_reason(exc: BaseException, *uris: str) -> str:
    """Why MLflow refused, in one line: the first line of its message that says something (not
    one that only introduces a list, "use either of the following methods:"), with the
    credentials hint for a 401 or 403, and the passwords of `uris` shown as ***."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = _telling_line(lines) or type(exc).__name__
    if needs_credentials(exc):
        reason = f"{reason} ({CREDENTIAL_HINT})"
    for uri in uris:
        reason = hide_password(reason, uri)
    return reason


def needs_credentials(exc: BaseException) -> bool:
    """Whether MLflow's server refused the request for want of credentials (or rights)."""
    code = getattr(exc, "error_code", None)
    return code in CREDENTIAL_CODES or "error code 401" in str(exc)


def _telling_line(lines: list[str]) -> str:
    """The first of `lines` that is no introduction to the lines after it: a line ending in a
    colon loses its last sentence (the introduction), or is passed over when that is all of
    it."""
    for line in lines:
        if not line.endswith(":"):
            return line
        head, dot, _ = line.rpartition(". ")
        if dot:
            return f"{head}."
    return lines[0] if lines else ""


def missing_in_registry(
    client: Any, name: str, alias: str | None, number: str | None, mlflow_error: type[Exception]
) -> str:
    """What a `models:/` URI names that the store lacks, with what the store holds instead
    (MLflow says "Registered model alias champion not found." and no more), or just what it
    lacks when the store cannot be asked."""
    try:
        model = client.get_registered_model(name)
    except mlflow_error:
        try:
            names = sorted(m.name for m in client.search_registered_models(max_results=6))
        except mlflow_error:
            return f"no registered model '{name}'"
        there = f"registered: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
        return f"no registered model '{name}' ({there if names else 'none registered yet'})"
    if alias is not None:
        aliases = sorted((model.aliases or {}).items())
        held = ", ".join(f"{a} -> version {v}" for a, v in aliases) or "none"
        return (
            f"model '{name}' has no alias '{alias}' (its aliases: {held}; mlfactory register "
            f"models:/{name}/VERSION --alias {alias} sets it)"
        )
    if number == "latest":  # asked only when the model has no version
        return f"model '{name}' has no version yet"
    try:
        numbers = sorted(int(v.version) for v in client.search_model_versions(name_filter(name)))
    except (mlflow_error, BundleError):
        return f"model '{name}' has no version {number}"
    shown = ", ".join(str(n) for n in numbers[-5:])
    held = f"version{'s' * (len(numbers) > 1)} {'..., ' * (len(numbers) > 5)}{shown}"
    return f"model '{name}' has no version {number} (it has {held if numbers else 'none'})"


def name_filter(name: str) -> str:
    """An MLflow filter on one registered model name (its grammar has no escapes: the quote
    the name lacks; a name with both quotes cannot be looked up by filter)."""
    quote = next((q for q in ("'", '"') if q not in name), None)
    if quote is None:
        raise BundleError(f"registered model name {name!r}: use a name without both kinds of quote")
    return f"name = {quote}{name}{quote}"
