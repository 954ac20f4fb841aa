// Inputs of sluice.pkr.hcl. Set them with -var NAME=VALUE, -var-file FILE, or
// PKR_VAR_NAME environment variables; see docs/ami.md.

variable "region" {
  type        = string
  description = "AWS region to build the AMI in."
  default     = "us-east-1"
}

variable "arch" {
  type        = string
  description = "CPU architecture of the AMI: amd64 (x86_64) or arm64 (Graviton). The release artifacts must be built for the same one."
  default     = "amd64"

  validation {
    condition     = contains(["amd64", "arm64"], var.arch)
    error_message = "The arch variable must be \"amd64\" or \"arm64\"."
  }
}

variable "instance_type" {
  type        = string
  description = "Build instance type. Empty: t3.small for amd64, t4g.small for arm64."
  default     = ""
}

variable "source_ami_owner" {
  type        = string
  description = "Account that publishes the official Debian AMIs."
  default     = "136693071363"
}

variable "artifacts_dir" {
  type        = string
  description = "Directory made by dev/release (sluice, plugins/*.wasm, sluice.toml, SHA256SUMS). Empty: target/release-artifacts of this repository."
  default     = ""
}

variable "sluice_version" {
  type        = string
  description = "Version recorded in the AMI name and tags. Empty: the VERSION file written by dev/release."
  default     = ""
}

variable "ami_name_prefix" {
  type        = string
  description = "Start of the AMI name; the version, architecture and a UTC timestamp follow."
  default     = "sluice"
}

variable "ami_users" {
  type        = list(string)
  description = "Account IDs allowed to launch the AMI (besides the owner)."
  default     = []
}

variable "kms_key_id" {
  type        = string
  description = "KMS key (ID, ARN or alias) for the root volume and the AMI snapshot. null: the account's default EBS key (aws/ebs)."
  default     = null
}

variable "root_volume_size" {
  type        = number
  description = "Root volume size in GiB."
  default     = 16
}

variable "root_device_name" {
  type        = string
  description = "Root device name of the Debian AMI."
  default     = "/dev/xvda"
}

variable "vpc_id" {
  type        = string
  description = "VPC for the build instance. null: the default VPC."
  default     = null
}

variable "subnet_id" {
  type        = string
  description = "Subnet for the build instance. null: one of the default VPC."
  default     = null
}

variable "associate_public_ip_address" {
  type        = bool
  description = "Give the build instance a public IP (needed to reach it over SSH from outside the VPC). null: the subnet's setting."
  default     = null
}

variable "ssh_interface" {
  type        = string
  description = "How Packer reaches the build instance: public_ip, private_ip, public_dns, private_dns or session_manager. null: Packer's choice."
  default     = null
}

variable "ssh_source_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to SSH to the build instance through Packer's temporary security group. Empty: only the public IP of the machine running Packer."
  default     = []
}

variable "apt_upgrade" {
  type        = bool
  description = "Apply pending Debian updates while building (recommended)."
  default     = true
}

variable "skip_create_ami" {
  type        = bool
  description = "Provision the instance but create no AMI: a dry run of the provisioning."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for the AMI, its snapshot and the build instance."
  default     = {}
}
