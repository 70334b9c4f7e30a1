#!/usr/bin/env python3
"""Derive the embedded catalog CSVs from /work/shared/data (see PROVENANCE.md).

Only columns are dropped; no row is added, removed or changed. Run from anywhere:
    python3 crates/catalog/data/derive.py /work/shared/data
"""
import csv
import os
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"
DST = os.path.dirname(os.path.abspath(__file__))

KEEP = {
    "instance-types.csv": [
        "instance_type", "family", "size", "category", "family_generation",
        "current_generation", "vcpus", "default_cores", "default_threads_per_core",
        "memory_mib", "architectures", "processor_manufacturer", "sustained_clock_ghz",
        "gpu_count", "gpu_logical_count", "gpu_partition_size", "gpu_manufacturer",
        "gpu_name", "gpu_memory_mib", "gpu_total_memory_mib", "accelerator_kind",
        "accelerator_manufacturer", "accelerator_name", "accelerator_count",
        "accelerator_total_memory_mib", "burstable", "bare_metal", "hypervisor",
        "local_storage_gb", "local_storage_type", "local_storage_disks",
        "network_performance", "network_baseline_gbps", "network_peak_gbps",
        "max_network_cards", "max_network_interfaces", "ipv4_per_interface",
        "ipv6_supported", "efa_supported", "ebs_baseline_bandwidth_mbps",
        "ebs_max_bandwidth_mbps", "spot_supported", "hibernation_supported",
    ],
    "instance-type-offerings.csv": ["region", "instance_type", "az_count"],
    "prices-on-demand.csv": ["region", "instance_type", "usd_per_hour", "source"],
    "ecs-mi-management-fee.csv": ["region", "instance_type", "fee_usd_per_hour", "basis"],
    "fargate-prices.csv": ["region", "os", "architecture", "dimension", "unit", "usd"],
    "fargate-task-sizes.csv": ["cpu_units", "vcpu", "memory_mib", "os"],
}

for name, cols in KEEP.items():
    with open(os.path.join(SRC, name), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(DST, name), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([r[c] for c in cols])
    print(f"{name}: {len(rows)} rows, {len(cols)} columns")
