"""What a request's strings claim to be, read without verifying them: a JWT's issuer, subject and
audience (STS and eks-auth verify the token), and whether a value is an IAM role ARN.

Standard library only (these run on cache hits); a leaf: the identity planning, the options and the
credential-chain prediction all read tokens and role ARNs the same way through here.
"""

from __future__ import annotations

from ecr_kubelet import jsoncodec

ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}"
_FROM_URLSAFE = str.maketrans("-_", "+/")


def is_role_arn(value: str) -> bool:
    """An IAM role ARN, arn:PARTITION:iam::ACCOUNT:role/PATH/NAME (compiled only when a role is given)."""
    import re

    return re.fullmatch(ROLE_ARN, value, re.ASCII) is not None


def jwt_claims(token: str) -> dict[str, str] | None:
    """Issuer, subject and audience of a JWT, read without verifying it (STS verifies); None unless
    they are strings (the audience: a string or a list of them).

    The audience is one string: itself, or for several (or one that starts with "[") the JSON list of
    them, sorted, so that no two audiences read the same."""
    payload = jwt_payload(token)
    if payload is None:
        return None
    iss, sub, aud = payload.get("iss"), payload.get("sub"), payload.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        audience = jsoncodec.dumps(sorted(set(aud)), compact=True)
    elif isinstance(aud, str):
        audience = jsoncodec.dumps([aud], compact=True) if aud.startswith("[") else aud
    else:
        return None
    if not (isinstance(iss, str) and isinstance(sub, str)):
        return None
    return {"iss": iss, "sub": sub, "aud": audience}


def jwt_payload(token: str) -> dict[str, object] | None:
    """A JWT's payload, decoded without verifying it; None if it is not one (anything goes: the token is
    the request's or a file's)."""
    import binascii  # base64.urlsafe_b64decode is this after a translate, without base64's import of re

    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        urlsafe = (parts[1] + "=" * (-len(parts[1]) % 4)).translate(_FROM_URLSAFE)
        payload = jsoncodec.loads(binascii.a2b_base64(urlsafe).decode())
    except (ValueError, binascii.Error, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None
