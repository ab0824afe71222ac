"""The public contract's metric families (../shared/CONTRACT.md), for tests that check
dashboards and the real exposition against it."""

# Metric families from the contract (plus threads_last_error_reason), with the labels each
# carries (job and instance come from Prometheus). Histograms expand to _bucket/_sum/_count.
CONTRACT = {
    "threads_up": {"account"},
    "threads_quota_usage": {"account", "quota"},
    "threads_quota_limit": {"account", "quota"},
    "threads_quota_window_seconds": {"account", "quota"},
    "threads_last_success_timestamp_seconds": {"account"},
    "threads_last_error_reason": {"account", "reason"},
    "threads_api_requests_total": {"account", "endpoint"},
    "threads_api_errors_total": {"account", "endpoint", "reason"},
    "threads_api_request_duration_seconds": {"endpoint"},
    "threads_containers": {"account", "status"},
    "threads_container_status_changes_total": {"account", "status"},
    "threads_container_errors_total": {"account", "error_message"},
    "threads_containers_stuck": {"account"},
    "threads_container_processing_seconds": {"account"},
    "threads_token_expiry_timestamp_seconds": {"account"},
    "threads_exporter_build_info": {"version", "python_version"},
    "threads_exporter_config_last_reload_successful": set(),
    "up": set(),
}
HISTOGRAMS = {"threads_api_request_duration_seconds", "threads_container_processing_seconds"}
