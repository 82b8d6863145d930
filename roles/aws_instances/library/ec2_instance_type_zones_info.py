#!/usr/bin/python
# Copyright (c) the inference-kit authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ec2_instance_type_zones_info
short_description: The availability zones of a region that offer an instance type
description:
  - Calls DescribeInstanceTypeOfferings with the availability-zone location type. Neither
    amazon.aws nor community.aws has a module for it.
options:
  instance_type:
    description: The instance type, e.g. C(g6e.xlarge).
    type: str
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

RETURN = r"""
zones:
  description: The zones that offer the instance type, sorted.
  type: list
  elements: str
  returned: always
  sample: ["us-east-1a", "us-east-1b"]
"""

import contextlib

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore


def main():
    spec = {"instance_type": {"type": "str", "required": True}}
    module = AnsibleAWSModule(argument_spec=spec, supports_check_mode=True)
    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    filters = [{"Name": "instance-type", "Values": [module.params["instance_type"]]}]
    try:
        pages = client.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="availability-zone", Filters=filters
        )
        zones = sorted({offering["Location"] for page in pages for offering in page["InstanceTypeOfferings"]})
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not read the instance type offerings")
    module.exit_json(changed=False, zones=zones)


if __name__ == "__main__":
    main()
