from beatgans.cli import rundirs as _rundirs  # noqa: F401  registers ${beatgans_run_id:} for conf/hydra
