"""Downloads with a size limit and an optional sha256, and archive extraction that cannot escape.

Archives are checked member by member before anything is written: absolute paths, `..`
components and links pointing outside the extraction folder refuse the whole archive, and so
does a total uncompressed size above the limit (zip bombs).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from http.client import HTTPMessage
from pathlib import Path
from typing import IO

from mlfactory.errors import DataError
from mlfactory.output import phase_log

logger = logging.getLogger(__name__)

# Override with MLFACTORY_MAX_DOWNLOAD_BYTES; extraction allows 4x this, uncompressed.
DEFAULT_MAX_DOWNLOAD_BYTES = 20 * 1024**3
CHUNK = 1024 * 1024
TIMEOUT_S = 60


class DownloadHTTPError(DataError):
    """The server answered with an HTTP error status (kept for callers that explain codes)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def max_download_bytes() -> int:
    """The download size limit: $MLFACTORY_MAX_DOWNLOAD_BYTES or 20 GiB.

    Raises:
        DataError: the variable is not a whole number.
    """
    value = os.environ.get("MLFACTORY_MAX_DOWNLOAD_BYTES", str(DEFAULT_MAX_DOWNLOAD_BYTES))
    try:
        return int(value)
    except ValueError:
        raise DataError(
            f"MLFACTORY_MAX_DOWNLOAD_BYTES={value} is not a number of bytes: fix or unset it"
        ) from None


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping credentials when they lead to another host (signed URLs)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != req.host:
            new.remove_header("Authorization")
        return new


def download(
    url: str,
    dest: Path,
    *,
    max_bytes: int | None = None,
    sha256: str | None = None,
    headers: dict[str, str] | None = None,
) -> Path:
    """Stream `url` to `dest`, refusing more than `max_bytes` and checking `sha256` if given.

    Args:
        url: an http(s) URL.
        dest: the file to write (written as `dest.part` first, renamed when complete).
        max_bytes: the size limit; defaults to `max_download_bytes()`.
        sha256: the expected hex digest of the file.
        headers: extra request headers (e.g. Authorization).

    Raises:
        DownloadHTTPError: the server answered with an error status.
        DataError: network error, size over the limit, or a sha256 mismatch.
    """
    limit = max_download_bytes() if max_bytes is None else max_bytes
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers=headers or {})
    shown = shown_url(url)
    phase_log.info("data: downloading %s", shown)
    opener = urllib.request.build_opener(_SameHostRedirects)
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response, part.open("wb") as out:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > limit:
                raise _too_big(shown, limit)
            received = 0
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise _too_big(shown, limit)
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        message = f"download of {shown} failed: HTTP {exc.code} {exc.reason}"
        raise DownloadHTTPError(message, exc.code) from None
    except (ValueError, http.client.InvalidURL):  # its message repeats the URL's password
        part.unlink(missing_ok=True)
        raise DataError(f"could not download {shown}: not a valid URL") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download {shown} ({reason}): check the URL and network"
        ) from None
    except DataError:
        part.unlink(missing_ok=True)
        raise
    if sha256 and digest.hexdigest() != sha256.lower():
        part.unlink(missing_ok=True)
        raise DataError(
            f"sha256 of {shown} is {digest.hexdigest()}, expected {sha256}: the file changed or "
            "the #sha256= fragment is wrong"
        )
    part.replace(dest)
    return dest


def shown_url(url: str) -> str:
    """`url` as a download's line and errors show it: no user:password, query or fragment (a
    signed URL's signature, a token)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# Query parameters that carry a credential (S3, GCS and CloudFront signatures, an Azure SAS
# `sig`, API tokens and keys, OAuth secrets, database passwords such as libpq's `sslpassword`):
# a URL is stored (run.json, bundle.json, MLflow) with their values masked, in its query and in
# a fragment of `name=value` fields (`#access_token=...`, OAuth's implicit flow).
SECRET_QUERY_NAMES = frozenset(
    {
        "access_key",
        "access_token",
        "api_key",
        "apikey",
        "auth_token",
        "client_secret",
        "id_token",
        "key",
        "key-pair-id",
        "passwd",
        "password",
        "policy",
        "private_token",
        "pwd",
        "refresh_token",
        "secret",
        "secret_access_key",
        "secret_key",
        "session_token",
        "sig",
        "signature",
        "sslpassword",
        "token",
        "x-api-key",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-credential",
        "x-goog-signature",
    }
)
MASKED = "***"


def without_query_secrets(url: str) -> str:
    """`url` with the values of its credential query parameters (`SECRET_QUERY_NAMES`) as ***
    and every other byte as it was (`...d.zip?X-Amz-Date=20261206T...&X-Amz-Signature=***`);
    so too the credential fields of its fragment (`#access_token=***&state=1`)."""
    rest, hash_mark, fragment = url.partition("#")
    base, mark, query = rest.partition("?")
    if mark:
        base = f"{base}?{_masked_fields(query)}"
    return f"{base}{hash_mark}{_masked_fields(fragment)}"


def _masked_fields(fields: str) -> str:
    """`name=value&...` with the values of credential names as ***."""
    return "&".join(
        f"{name}={MASKED}" if _is_secret(name) and equals else f"{name}{equals}{value}"
        for name, equals, value in (field.partition("=") for field in fields.split("&"))
    )


def has_masked_secret(url: str) -> bool:
    """Whether `url` went through `without_query_secrets` with a credential in it (which it
    left out), as a URL stored with a run does."""
    query = url.partition("?")[2].partition("#")[0]
    fields = (field.partition("=") for field in query.split("&"))
    return any(_is_secret(name) and value == MASKED for name, _, value in fields)


def _is_secret(name: str) -> bool:
    return urllib.parse.unquote_plus(name).lower() in SECRET_QUERY_NAMES


def _too_big(url: str, limit: int) -> DataError:
    return DataError(
        f"download of {url} exceeds the limit of {limit} bytes: raise MLFACTORY_MAX_DOWNLOAD_BYTES"
    )


def extract_archive(archive: Path, dest: Path, max_total_bytes: int | None = None) -> None:
    """Extract a zip or tar archive (any compression) into `dest`, refusing unsafe members.

    Args:
        archive: the archive file; its format is detected from the content.
        dest: an existing, empty folder.
        max_total_bytes: refuse archives whose members add up to more; defaults to 4x the
            download limit.

    Raises:
        DataError: not an archive, a member escaping `dest`, or too large when uncompressed.
    """
    limit = 4 * max_download_bytes() if max_total_bytes is None else max_total_bytes
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, limit)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, limit)
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive: check the source URL")


def _check_member(archive: Path, name: str, link_target: str | None = None) -> None:
    """Refuse absolute names, `..` components, and link targets that leave the archive root."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        raise DataError(f"refusing {archive}: member '{name}' has an absolute path")
    if ".." in normal.split("/"):
        raise DataError(f"refusing {archive}: member '{name}' points outside the archive (..)")
    if link_target is not None:
        target = link_target.replace("\\", "/")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(normal), target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            raise DataError(
                f"refusing {archive}: link '{name}' -> '{link_target}' points outside the archive"
            )


def _extract_zip(archive: Path, dest: Path, limit: int) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            links = {i.filename for i in infos if stat.S_ISLNK(i.external_attr >> 16)}
            for info in infos:
                target = (
                    zf.read(info).decode("utf-8", "replace") if info.filename in links else None
                )
                _check_member(archive, info.filename, target)
            if sum(info.file_size for info in infos) > limit:
                raise DataError(f"refusing {archive}: more than {limit} bytes uncompressed")
            written = 0
            for info in infos:
                # zipfile would write a link as a small file holding its target: leave links out.
                if info.is_dir() or info.filename in links:
                    continue
                path = dest / info.filename.replace("\\", "/")
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, path.open("wb") as out:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise DataError(f"refusing {archive}: more than {limit} bytes")
                        out.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive} ({exc}): the download may be corrupt") from None


def _extract_tar(archive: Path, dest: Path, limit: int) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                target = member.linkname if (member.issym() or member.islnk()) else None
                if member.islnk() and target is not None:
                    # Hard-link targets are archive paths, not paths relative to the link.
                    _check_member(archive, target)
                    target = None
                _check_member(archive, member.name, target)
                if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                    raise DataError(f"refusing {archive}: member '{member.name}' is a device/fifo")
            if sum(m.size for m in members if m.isfile()) > limit:
                raise DataError(f"refusing {archive}: more than {limit} bytes uncompressed")
            tf.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise DataError(f"refusing {archive}: {exc}") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive} ({exc}): the download may be corrupt") from None
