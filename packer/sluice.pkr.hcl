// EC2 AMI for Sluice: official Debian 12 (bookworm) + the sluice binary, the
// bundled plugins, the default configuration and a hardened systemd service.
//
//   dev/release                      # builds target/release-artifacts/
//   packer init packer/
//   packer build packer/
//
// Inputs are in variables.pkr.hcl; the manual is docs/ami.md.

packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "= 1.8.2"
    }
  }
}

locals {
  timestamp     = formatdate("YYYYMMDD'T'hhmmss'Z'", timestamp())
  aws_arch      = var.arch == "arm64" ? "arm64" : "x86_64"
  instance_type = var.instance_type != "" ? var.instance_type : (var.arch == "arm64" ? "t4g.small" : "t3.small")
  artifacts_dir = var.artifacts_dir != "" ? var.artifacts_dir : "${path.root}/../target/release-artifacts"
  version_file  = "${local.artifacts_dir}/VERSION"
  version = var.sluice_version != "" ? var.sluice_version : (
    fileexists(local.version_file) ? trimspace(file(local.version_file)) : "unversioned"
  )
  // AMI names allow letters, digits, spaces and ( ) [ ] . / - ' @ _
  ami_name = "${var.ami_name_prefix}-${regex_replace(local.version, "[^A-Za-z0-9._-]", "_")}-${var.arch}-${local.timestamp}"

  tags = merge(
    {
      Application = "sluice"
      Version     = local.version
      Arch        = var.arch
      BaseAMI     = "{{ .SourceAMI }}"
      BaseAMIName = "{{ .SourceAMIName }}"
      BuiltBy     = "packer"
    },
    var.tags,
  )
}

source "amazon-ebs" "sluice" {
  region        = var.region
  instance_type = local.instance_type

  source_ami_filter {
    filters = {
      name                = "debian-12-${var.arch}-*"
      architecture        = local.aws_arch
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = [var.source_ami_owner]
    most_recent = true
  }

  ami_name        = local.ami_name
  ami_description = "Sluice ${local.version} (${var.arch}) on Debian 12 bookworm"
  ami_users       = var.ami_users
  ena_support     = true
  sriov_support   = true
  skip_create_ami = var.skip_create_ami

  // IMDSv2 only: on the build instance...
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }
  // ...and on every instance launched from the AMI.
  imds_support = "v2.0"

  // Encrypted root volume; its snapshot, and so the AMI, stay encrypted.
  launch_block_device_mappings {
    device_name           = var.root_device_name
    volume_size           = var.root_volume_size
    volume_type           = "gp3"
    encrypted             = true
    kms_key_id            = var.kms_key_id
    delete_on_termination = true
  }

  vpc_id                      = var.vpc_id
  subnet_id                   = var.subnet_id
  associate_public_ip_address = var.associate_public_ip_address

  communicator              = "ssh"
  ssh_username              = "admin"
  ssh_interface             = var.ssh_interface
  ssh_timeout               = "10m"
  ssh_clear_authorized_keys = true
  // Packer's temporary security group: SSH from the given CIDRs, or from this
  // machine's public IP only (never 0.0.0.0/0).
  temporary_security_group_source_cidrs     = length(var.ssh_source_cidrs) > 0 ? var.ssh_source_cidrs : null
  temporary_security_group_source_public_ip = length(var.ssh_source_cidrs) == 0

  tags            = merge(local.tags, { Name = local.ami_name })
  snapshot_tags   = merge(local.tags, { Name = local.ami_name })
  run_tags        = merge(local.tags, { Name = "packer-build-${var.ami_name_prefix}" })
  run_volume_tags = merge(local.tags, { Name = "packer-build-${var.ami_name_prefix}" })
}

build {
  name    = "sluice"
  sources = ["source.amazon-ebs.sluice"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/sluice-build/release /tmp/sluice-build/files"]
  }

  // The release: sluice, plugins/*.wasm, sluice.toml, VERSION, SHA256SUMS.
  provisioner "file" {
    source      = "${local.artifacts_dir}/"
    destination = "/tmp/sluice-build/release"
  }

  // systemd units and the boot-time settings script.
  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/sluice-build/files"
  }

  provisioner "shell" {
    script          = "${path.root}/scripts/provision.sh"
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "SLUICE_BUILD_DIR=/tmp/sluice-build",
      "SLUICE_APT_UPGRADE=${var.apt_upgrade ? "yes" : "no"}",
      "SLUICE_IMAGE_CLEANUP=yes",
    ]
  }

  post-processor "manifest" {
    output     = "${path.root}/../target/packer-manifest.json"
    strip_path = true
  }
}
