"""Break-glass re-identification of a value encrypted with `operator: encrypt`; every use is audited.

    PIPELINES_ENABLE_REIDENTIFICATION=1 python -m pipelines.privacy.reidentify \\
        --dataset hr_employees --column full_name --token <ciphertext> --reason "INC-123 legal hold" --requested-by "J. Smith"

The audit record names who, why, which dataset/column and the key id; it never holds the clear value.
"""

from __future__ import annotations

import argparse
import os
import sys

from presidio_anonymizer.operators import Decrypt

from pipelines.audit import append
from pipelines.privacy.keys import load_key
from pipelines.resources import default_data_dir

AUDIT_FILE = "audit/reidentification.jsonl"


def reidentify(token: str, *, dataset: str, column: str, reason: str, requested_by: str) -> str:
    """Decrypt one token, after writing the audit record (no record, no clear value)."""
    if os.environ.get("PIPELINES_ENABLE_REIDENTIFICATION") != "1":
        raise PermissionError(
            "re-identification is disabled; set PIPELINES_ENABLE_REIDENTIFICATION=1 (break-glass only)"
        )
    if len(reason.strip()) < 10 or not requested_by.strip():
        raise ValueError("a break-glass request needs who (--requested-by) and a reason of at least 10 characters")
    data_dir = default_data_dir()
    key = load_key("PIPELINES_REIDENTIFICATION_KEY", data_dir / "keys" / "reidentification.key", create=False)
    append(
        data_dir / AUDIT_FILE,
        {
            # `key_id` on every record is the audit key's; this names the break-glass key that decrypted
            "action": "decrypt",
            "dataset": dataset,
            "column": column,
            "reidentification_key_id": key.key_id,
            "requested_by": requested_by,
            "reason": reason,
        },
    )
    return Decrypt().operate(token, {"key": key.secret[:32].decode("ascii")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("dataset", "column", "token", "reason", "requested-by"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    try:
        print(
            reidentify(
                args.token, dataset=args.dataset, column=args.column, reason=args.reason, requested_by=args.requested_by
            )
        )
    except (PermissionError, ValueError) as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
