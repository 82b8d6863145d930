#!/usr/bin/python
# Copyright (c) the inference-kit authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: s3_log_bucket_info
short_description: What an access-log bucket is, asked of the bucket itself
description:
  - Asks the bucket itself (HeadBucket, GetBucketLocation, GetBucketEncryption, GetBucketPolicy),
    not the caller's bucket list, so a bucket of another account (a central log archive) is found.
    What the caller may not read is reported as unreadable, not as missing.
  - Written because C(amazon.aws.s3_bucket_info) looks a named bucket up in ListBuckets, which
    lists the caller's own buckets only, and reads no default encryption.
options:
  name:
    description: Bucket name.
    type: str
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

RETURN = r"""
exists:
  description: Whether the bucket exists (HeadBucket answers 200, or 403 for a bucket the caller may not list).
  type: bool
  returned: always
region:
  description: >-
    The bucket's region (HeadBucket's x-amz-bucket-region, which S3 sends with a 403 too); empty
    when unknown.
  type: str
  returned: always
encryption:
  description: The default encryption (AES256, aws:kms, aws:kms:dsse), "none", or null when unreadable.
  type: str
  returned: always
policy:
  description: The bucket policy as JSON text, "" when it has none, or null when unreadable.
  type: str
  returned: always
"""

import contextlib

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

DENIED = {"AccessDenied", "AllAccessDisabled", "403"}


def code(error):
    return error.response.get("Error", {}).get("Code", "")


def main():
    module = AnsibleAWSModule(argument_spec={"name": {"type": "str", "required": True}}, supports_check_mode=True)
    client = module.client("s3", retry_decorator=AWSRetry.jittered_backoff())
    name = module.params["name"]
    result = {"changed": False, "exists": True, "region": "", "encryption": None, "policy": None}
    try:
        head = client.head_bucket(Bucket=name)
        result["region"] = head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region", "")
    except botocore.exceptions.ClientError as e:
        if code(e) in ("404", "NoSuchBucket", "NotFound"):
            module.exit_json(**result | {"exists": False})
        if code(e) not in DENIED:
            module.fail_json_aws(e, msg=f"Could not look up bucket {name}")
        result["region"] = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region", "")
    except botocore.exceptions.BotoCoreError as e:
        module.fail_json_aws(e, msg=f"Could not look up bucket {name}")
    if not result["region"]:
        with contextlib.suppress(botocore.exceptions.ClientError):
            result["region"] = client.get_bucket_location(Bucket=name).get("LocationConstraint") or "us-east-1"
    try:
        rules = client.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
        defaults = [r["ApplyServerSideEncryptionByDefault"] for r in rules if "ApplyServerSideEncryptionByDefault" in r]
        found = [d["SSEAlgorithm"] for d in defaults]
        result["encryption"] = found[0] if found else "none"
    except botocore.exceptions.ClientError as e:
        if code(e) == "ServerSideEncryptionConfigurationNotFoundError":
            result["encryption"] = "none"
        elif code(e) not in DENIED:
            module.fail_json_aws(e, msg=f"Could not read the default encryption of bucket {name}")
    try:
        result["policy"] = client.get_bucket_policy(Bucket=name)["Policy"]
    except botocore.exceptions.ClientError as e:
        if code(e) == "NoSuchBucketPolicy":
            result["policy"] = ""
        elif code(e) not in DENIED:
            module.fail_json_aws(e, msg=f"Could not read the policy of bucket {name}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
