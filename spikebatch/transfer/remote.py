"""What a remote input is before it is downloaded: its size, and a URL any HTTP reader can open.

The worker sizes its scratch before it fetches (``spikebatch.worker.budget``): it needs the
byte count and, to read the file's HDF5 metadata over ranges, a plain HTTP(S) URL. An
``s3://`` object gets a short-lived presigned GET URL (the job role's credentials; boto3
honours ``AWS_ENDPOINT_URL``, so tests point it at moto).
"""

from __future__ import annotations

import logging

from spikebatch.transfer import ranged_http, s3
from spikebatch.transfer.errors import TransferError
from spikebatch.transfer.uris import local_path, scheme_of, split_s3

log = logging.getLogger(__name__)

#: Lifetime of a presigned URL for reading an object's metadata (minutes of work at most).
SIGNED_URL_SECONDS = 900


def remote_size(uri: str) -> int | None:
    """The size in bytes of ``uri`` (``file://``, ``s3://``, ``http(s)://``); None if unknown."""
    scheme = scheme_of(uri)
    try:
        if scheme == "file":
            return local_path(uri).stat().st_size
        if scheme == "s3":
            bucket, key = split_s3(uri)
            with s3._errors(uri):
                return int(s3.client().head_object(Bucket=bucket, Key=key)["ContentLength"])
        with ranged_http.new_session(1) as session:
            probe = ranged_http._probe(session, uri)
            if probe.stream is not None:
                probe.stream.close()
            return probe.size
    except (OSError, TransferError) as exc:
        log.warning("size of %s: %s", ranged_http.redact(uri), exc)
        return None


def signed_url(uri: str) -> str:
    """An HTTP(S) URL for ``uri``: a presigned GET for ``s3://``, the URL itself otherwise."""
    if scheme_of(uri) != "s3":
        return uri
    bucket, key = split_s3(uri)
    return s3.client().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=SIGNED_URL_SECONDS
    )
