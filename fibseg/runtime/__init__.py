"""What a job runs with: typed settings built from the config (settings), the job's log,
threads and provenance (job), and progress lines (progress)."""
